package auth

import (
	_ "embed"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Password length limits. The minimum counts characters (after NFKC
// normalisation), the maximum bytes: long passphrases are welcome, but
// a megabyte "password" only costs hashing time.
const (
	MinPasswordChars = 12
	MaxPasswordBytes = 1024
)

// Reasons a password is refused (PolicyError.Reason).
const (
	ReasonTooShort      = "too_short"
	ReasonTooLong       = "too_long"
	ReasonInvalid       = "invalid_characters"
	ReasonCommon        = "common"
	ReasonContainsEmail = "contains_email"
)

// PolicyError is a password the policy refuses, and why. Its text never
// contains the password.
type PolicyError struct {
	Reason string
	Detail string
}

func (e *PolicyError) Error() string { return e.Detail }

//go:embed common_passwords.txt
var commonPasswordsFile string

// commonPasswords is the set of lines of common_passwords.txt.
var commonPasswords = func() map[string]bool {
	set := map[string]bool{}
	for _, line := range strings.Split(commonPasswordsFile, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			set[strings.ToLower(line)] = true
		}
	}
	return set
}()

// NormalizePassword is the form of a password that is hashed and checked:
// NFKC (so that the same password typed on two keyboards, composed or
// decomposed, is the same password; NIST SP 800-63B 5.1.1.2).
func NormalizePassword(password string) string { return norm.NFKC.String(password) }

// CheckPassword applies the password policy to a new password of the
// account email:
//   - valid UTF-8 without control characters;
//   - at least MinPasswordChars characters and at most MaxPasswordBytes bytes;
//   - not a common password (the embedded list), nor one with digits or
//     punctuation around it, in leetspeak (P4ssw0rd!) or repeated
//     (monkeymonkey), nor a run of the keyboard or the alphabet, nor a
//     short pattern repeated (abcabcabcabc);
//   - not containing the local part of email (when it has 3 characters or
//     more), nor one of its dot, dash or underscore separated pieces of 4
//     characters or more, regardless of case.
//
// It returns a *PolicyError or nil.
func CheckPassword(password, email string) error {
	if !utf8.ValidString(password) {
		return &PolicyError{ReasonInvalid, "the password is not valid UTF-8"}
	}
	password = NormalizePassword(password)
	for _, r := range password {
		if unicode.IsControl(r) {
			return &PolicyError{ReasonInvalid, "the password contains control characters"}
		}
	}
	if utf8.RuneCountInString(password) < MinPasswordChars {
		return &PolicyError{ReasonTooShort, "the password must have at least 12 characters"}
	}
	if len(password) > MaxPasswordBytes {
		return &PolicyError{ReasonTooLong, "the password must have at most 1024 bytes"}
	}
	lower := strings.ToLower(password)
	if isCommon(lower) {
		return &PolicyError{ReasonCommon, "the password is too common or too simple; a few unrelated words make a good one"}
	}
	local, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(email)), "@")
	if utf8.RuneCountInString(local) >= 3 && strings.Contains(lower, local) {
		return &PolicyError{ReasonContainsEmail, "the password must not contain the email address's local part"}
	}
	for _, piece := range strings.FieldsFunc(local, func(r rune) bool { return r == '.' || r == '-' || r == '_' || r == '+' }) {
		if utf8.RuneCountInString(piece) >= 4 && strings.Contains(lower, piece) {
			return &PolicyError{ReasonContainsEmail, "the password must not contain the email address's local part"}
		}
	}
	return nil
}

// isCommon reports whether lower (a lowercase password) is weak by
// construction: see CheckPassword.
func isCommon(lower string) bool {
	if commonPasswords[lower] || isRun(lower) || isRepeat(lower, 4) {
		return true
	}
	core := strings.TrimFunc(lower, func(r rune) bool {
		return unicode.IsDigit(r) || unicode.IsPunct(r) || unicode.IsSymbol(r) || unicode.IsSpace(r)
	})
	if core == "" {
		// Digits and punctuation only: weak if they make a run or a
		// pattern (123456789012, 11111111111!); otherwise it is a long
		// random-looking number, which the length rule already allows.
		return false
	}
	for _, c := range []string{core, deLeet(core, 'i'), deLeet(core, 'l')} {
		if commonPasswords[c] || isRun(c) || isRepeat(c, 4) {
			return true
		}
		// A common word repeated (monkeymonkey, passwordpassword1).
		for d := 1; d < len(c); d++ {
			if len(c)%d == 0 && strings.Repeat(c[:d], len(c)/d) == c && commonPasswords[c[:d]] {
				return true
			}
		}
	}
	return false
}

// deLeet undoes the usual digit and symbol substitutions; one stands for
// i or l, as given.
func deLeet(s string, one rune) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '0':
			return 'o'
		case '1', '!', '|':
			return one
		case '3':
			return 'e'
		case '4', '@':
			return 'a'
		case '5', '$':
			return 's'
		case '7':
			return 't'
		case '8':
			return 'b'
		}
		return r
	}, s)
}

// runs are sequences a password must not be a stretch of (forwards or
// backwards, wrapping around).
var runs = []string{
	"abcdefghijklmnopqrstuvwxyz",
	"0123456789",
	"qwertyuiopasdfghjklzxcvbnm",
	"qwertzuiopasdfghjklyxcvbnm",
	"azertyuiopqsdfghjklmwxcvbn",
	"1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
	"qazwsxedcrfvtgbyhnujmikolp",
	"1234567890qwertyuiopasdfghjklzxcvbnm",
}

// isRun reports whether s is a stretch of one of runs.
func isRun(s string) bool {
	for _, run := range runs {
		for _, r := range []string{run, reverse(run)} {
			// Repeated so that a stretch may wrap around (7890123456...).
			if strings.Contains(strings.Repeat(r, 2+len(s)/len(r)), s) {
				return true
			}
		}
	}
	return false
}

// isRepeat reports whether s is a pattern of at most maxPeriod
// characters repeated (aaaaaaaaaaaa, abcabcabcabc, 12121212).
func isRepeat(s string, maxPeriod int) bool {
	rs := []rune(s)
	for d := 1; d <= maxPeriod && d < len(rs); d++ {
		repeated := true
		for i := d; i < len(rs); i++ {
			if rs[i] != rs[i-d] {
				repeated = false
				break
			}
		}
		if repeated {
			return true
		}
	}
	return false
}

func reverse(s string) string {
	rs := []rune(s)
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
	return string(rs)
}
