// Package config reads DocuVault's settings: the process environment, an
// optional env file, and the parsing and validation shared by the binaries.
//
// Every binary builds one Config of its own from a Source; the parsers here
// return errors that name the key and never contain a secret.
package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/joho/godotenv"
)

// DefaultEnvFile is read when no --env-file is given and it exists.
const DefaultEnvFile = "/etc/docuvault/env"

// Keys lists every setting any DocuVault binary reads. An env file may hold
// only these keys (the same file serves all binaries), so a typo stops the
// process instead of being ignored. .env.example documents each of them.
var Keys = []string{
	"DATABASE_URL",
	"DATABASE_MIGRATE_URL",
	"DATABASE_ADMIN_URL",
	"MINIO_ENDPOINT",
	"MINIO_ROOT_USER",
	"MINIO_ROOT_PASSWORD",
	"MINIO_BUCKET",
	"REDIS_URL",
	"SECRET_KEY",
	"HTTP_ADDR",
	"METRICS_ADDR",
	"UPLOAD_MAX_BYTES",
	"UPLOAD_CONCURRENCY_PER_CLIENT",
	"TRUSTED_PROXIES",
	"DUPLICATE_POLICY",
	"STREAM_RETENTION",
	"QUOTA_DEFAULT_BYTES",
	"QUOTA_DEFAULT_DOCUMENTS",
	"CLAIM_AFTER",
	"AUTH_REGISTRATION",
	"AUTH_ACCESS_TOKEN_TTL",
	"AUTH_REFRESH_TOKEN_TTL",
	"AUTH_LOGIN_RATE_PER_IP",
	"AUTH_LOGIN_RATE_PER_ACCOUNT",
	"AUTH_REGISTER_RATE_PER_IP",
	"AUTH_REGISTER_RATE_PER_ACCOUNT",
	"AUTH_REFRESH_RATE_PER_IP",
	"AUTH_REFRESH_RATE_PER_ACCOUNT",
	"LOG_LEVEL",
	"LOG_FORMAT",
}

// Source looks settings up: the process environment first, then the env
// file. It is built once in a binary's run function.
type Source struct {
	getenv func(string) string
	file   map[string]string
	// EnvFile is the env file that was read, or "" when none was.
	EnvFile string
	// Warnings are problems worth logging that do not stop start-up, such
	// as an env file readable by other users.
	Warnings []string
}

// Get returns the value of key, or "" when it is set nowhere.
func (s *Source) Get(key string) string {
	if v := s.getenv(key); v != "" {
		return v
	}
	return s.file[key]
}

// Load parses a command line of the form `[--env-file PATH] [command
// [--env-file PATH] [args...]]` and reads the env file: the one named, or
// DefaultEnvFile when it exists. It returns the command ("" when none is
// given) and the arguments after it. getenv is the process environment
// (os.Getenv in production).
//
// It returns an error, naming the file and the key, when the named env file
// is missing or cannot be parsed, or sets a key that no DocuVault binary
// knows; flag.ErrHelp for -h/--help.
func Load(prog string, args []string, getenv func(string) string) (cmd string, rest []string, src *Source, err error) {
	parse := func(args []string) (string, []string, error) {
		flags := flag.NewFlagSet(prog, flag.ContinueOnError)
		flags.SetOutput(io.Discard)
		envFile := flags.String("env-file", "", "")
		if err := flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", nil, err
			}
			return "", nil, fmt.Errorf("command line: %w", err)
		}
		return *envFile, flags.Args(), nil
	}
	path, rest, err := parse(args)
	if err != nil {
		return "", nil, nil, err
	}
	if len(rest) > 0 {
		cmd = rest[0]
		var path2 string
		if path2, rest, err = parse(rest[1:]); err != nil {
			return "", nil, nil, err
		}
		path = cmp.Or(path2, path)
	}
	src, err = readEnvFile(path, getenv)
	return cmd, rest, src, err
}

// SplitCommand splits a command line whose command is name into the
// arguments before it (--env-file) and the command's own, which Load would
// refuse as unknown flags; ok is false when the command is another.
func SplitCommand(args []string, name string) (global, rest []string, ok bool) {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == name:
			return args[:i], args[i+1:], true
		case a == "--env-file" || a == "-env-file":
			i++ // its value
		case !strings.HasPrefix(a, "-"):
			return nil, nil, false // another command
		}
	}
	return nil, nil, false
}

// LoadCommand is Load for a command whose own flags SplitCommand took
// apart: global are the arguments before the command, envFile the
// command's --env-file (which wins), and each warning goes to warn as one
// line.
func LoadCommand(prog string, global []string, envFile string, getenv func(string) string, warn io.Writer) (*Source, error) {
	if envFile != "" {
		global = append(slices.Clone(global), "--env-file", envFile)
	}
	_, _, src, err := Load(prog, global, getenv)
	if err != nil {
		return nil, err
	}
	for _, w := range src.Warnings {
		fmt.Fprintln(warn, "warning: "+w)
	}
	return src, nil
}

func readEnvFile(path string, getenv func(string) string) (*Source, error) {
	src := &Source{getenv: getenv, file: map[string]string{}}
	if path == "" {
		if _, err := os.Stat(DefaultEnvFile); err == nil {
			path = DefaultEnvFile
		}
	}
	if path == "" {
		return src, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("--env-file: %s does not exist", path)
		}
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		src.Warnings = append(src.Warnings, fmt.Sprintf(
			"env file %s is accessible by group or others (mode %04o); it holds secrets: chmod 600 it", path, info.Mode().Perm()))
	}
	values, err := godotenv.Read(path)
	if err != nil {
		// godotenv's messages quote the offending line, which may hold a
		// secret; name the file only.
		return nil, fmt.Errorf("--env-file: %s is not a valid env file (KEY=value lines)", path)
	}
	for _, key := range slices.Sorted(maps.Keys(values)) {
		if !slices.Contains(Keys, key) {
			return nil, fmt.Errorf("%s: unknown setting %s (known: %s)", path, key, strings.Join(Keys, ", "))
		}
	}
	src.file = values
	src.EnvFile = path
	return src, nil
}

// ParseFlags parses a subcommand's args with fs (errors not printed): it
// writes usage to stdout and reports help for -h/--help, and names the
// subcommand (name) in an error for an unknown flag or a bad value, or
// for an argument left over.
func ParseFlags(fs *flag.FlagSet, args []string, name, usage string, stdout io.Writer) (help bool, err error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, _ = io.WriteString(stdout, usage)
			return true, nil
		}
		return false, fmt.Errorf("%s: %w", name, err)
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	return false, nil
}
