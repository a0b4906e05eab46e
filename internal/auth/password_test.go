package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// testArgon2 keeps the tests fast; the format and logic are the same.
var testArgon2 = Argon2Params{MemoryKiB: 1024, Iterations: 1, Parallelism: 1, SaltLen: 16, KeyLen: 32}

func TestHashAndVerify(t *testing.T) {
	ctx := context.Background()
	h := NewHasher(testArgon2)
	hash, err := h.Hash(ctx, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=1024,t=1,p=1$") || strings.Contains(hash, "horse") {
		t.Fatalf("hash %q is not an Argon2id PHC string of the parameters", hash)
	}
	if again, _ := h.Hash(ctx, "correct horse battery"); again == hash {
		t.Error("two hashes of one password are equal: no salt")
	}
	for pw, want := range map[string]bool{"correct horse battery": true, "correct horse batterY": false, "": false} {
		ok, rehash, err := h.Verify(ctx, pw, hash)
		if err != nil || ok != want || rehash {
			t.Errorf("Verify(%q) = %v, %v, %v; want %v, false, nil", pw, ok, rehash, err, want)
		}
	}
	// NFKC: the composed and decomposed forms are one password.
	composed, decomposed := "caf\u00e9 au lait ok", "cafe\u0301 au lait ok"
	hash, _ = h.Hash(ctx, composed)
	if ok, _, _ := h.Verify(ctx, decomposed, hash); !ok {
		t.Error("the decomposed form of the password does not verify")
	}
}

// A hash made with other parameters verifies with the parameters it
// names, and asks to be replaced.
func TestVerifyOlderParametersAsksForRehash(t *testing.T) {
	ctx := context.Background()
	old := NewHasher(testArgon2)
	hash, _ := old.Hash(ctx, "an older password here")
	stronger := testArgon2
	stronger.Iterations = 2
	ok, rehash, err := NewHasher(stronger).Verify(ctx, "an older password here", hash)
	if !ok || !rehash || err != nil {
		t.Errorf("Verify = %v, %v, %v; want true, true, nil", ok, rehash, err)
	}
	if ok, rehash, _ := NewHasher(stronger).Verify(ctx, "wrong", hash); ok || rehash {
		t.Error("a wrong password asks for a rehash")
	}
}

func TestVerifyRefusesMalformedHashes(t *testing.T) {
	h := NewHasher(testArgon2)
	good, _ := h.Hash(context.Background(), "whatever it is here")
	parts := strings.Split(good, "$")
	for name, hash := range map[string]string{
		"empty":       "",
		"bcrypt":      "$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
		"argon2i":     strings.Replace(good, "argon2id", "argon2i", 1),
		"version 16":  strings.Replace(good, "v=19", "v=16", 1),
		"huge memory": strings.Replace(good, "m=1024", "m=99999999", 1),
		"no passes":   strings.Replace(good, "t=1", "t=0", 1),
		"extra param": strings.Replace(good, "p=1", "p=1,x=2", 1),
		"bad salt":    strings.Join([]string{"", parts[1], parts[2], parts[3], "!!", parts[5]}, "$"),
		"short key":   strings.Join([]string{"", parts[1], parts[2], parts[3], parts[4], "AAAA"}, "$"),
	} {
		if _, _, err := h.Verify(context.Background(), "whatever it is here", hash); !errors.Is(err, ErrMalformedHash) {
			t.Errorf("%s: %v; want ErrMalformedHash", name, err)
		}
	}
}

// VerifyDummy costs one verification, like Verify, and never fails.
func TestVerifyDummyCountsOneVerification(t *testing.T) {
	h := NewHasher(testArgon2)
	ctx := context.Background()
	hash, _ := h.Hash(ctx, "some password here")
	before := h.Verifications()
	if err := h.VerifyDummy(ctx, "some password here"); err != nil {
		t.Fatal(err)
	}
	_, _, _ = h.Verify(ctx, "some password here", hash)
	if n := h.Verifications() - before; n != 2 {
		t.Errorf("%d verifications; want 2", n)
	}
}

func TestHashHonoursCancellationWhileWaiting(t *testing.T) {
	h := NewHasher(testArgon2)
	for range cap(h.slots) {
		h.slots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "some password here"); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash with every slot taken and ctx cancelled: %v", err)
	}
}

func TestPasswordPolicy(t *testing.T) {
	for _, c := range []struct {
		password, email, reason string
	}{
		{"short1!", "a@example.org", ReasonTooShort},
		{"elevenchars", "a@example.org", ReasonTooShort},
		{strings.Repeat("long horse ", 100), "a@example.org", ReasonTooLong},
		{"bad\xffutf-8 password", "a@example.org", ReasonInvalid},
		{"tab\tin the password", "a@example.org", ReasonInvalid},
		{"password1234", "a@example.org", ReasonCommon},
		{"Password2026!", "a@example.org", ReasonCommon},
		{"P4ssw0rd-2026", "a@example.org", ReasonCommon},
		{"!!iloveyou!!", "a@example.org", ReasonCommon},
		{"monkeymonkey", "a@example.org", ReasonCommon},
		{"qwertyuiopas", "a@example.org", ReasonCommon},
		{"123456789012", "a@example.org", ReasonCommon},
		{"zyxwvutsrqpo", "a@example.org", ReasonCommon},
		{"aaaaaaaaaaaa", "a@example.org", ReasonCommon},
		{"abcabcabcabc", "a@example.org", ReasonCommon},
		{"docuvault2026!", "a@example.org", ReasonCommon},
		{"correct horse battery staple", "a@example.org", ReasonCommon},
		{"xXalice.smithXx99", "alice.smith@example.org", ReasonContainsEmail},
		{"my SMITH family 2026", "alice.smith@example.org", ReasonContainsEmail},
		{"bob is my name today", "bob@example.org", ReasonContainsEmail},
	} {
		err := CheckPassword(c.password, c.email)
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Reason != c.reason {
			t.Errorf("CheckPassword(%q, %q) = %v; want reason %s", c.password, c.email, err, c.reason)
			continue
		}
		if strings.Contains(err.Error(), c.password) {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
	for _, good := range []string{
		"correct horse battery stapler",
		"tr0ub4dor&3 is old",
		"Zebra-Lamp-Oyster-91",
		"493820175638", // a long random number
		"jö café über straße",
		"al is my short name", // a local part under 3 characters is not looked for
	} {
		if err := CheckPassword(good, "al@example.org"); err != nil {
			t.Errorf("CheckPassword(%q) = %v; want nil", good, err)
		}
	}
}
