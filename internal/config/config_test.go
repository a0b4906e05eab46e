package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvironmentOverridesEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte("HTTP_ADDR=127.0.0.1:1111\nLOG_LEVEL=debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HTTP_ADDR": "127.0.0.1:2222"}
	cmd, rest, src, err := Load("api", []string{"serve", "--env-file", path}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cmd != "serve" || len(rest) != 0 {
		t.Errorf("cmd %q rest %v", cmd, rest)
	}
	if got := src.Get("HTTP_ADDR"); got != "127.0.0.1:2222" {
		t.Errorf("HTTP_ADDR = %q; the environment must win over the file", got)
	}
	if got := src.Get("LOG_LEVEL"); got != "debug" {
		t.Errorf("LOG_LEVEL = %q; want the file's value", got)
	}
	if len(src.Warnings) != 0 {
		t.Errorf("warnings for a 0600 file: %v", src.Warnings)
	}
}

func TestMalformedEnvFileDoesNotEchoItsContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte("DATABASE_URL='postgres://u:hunter2@h/db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := Load("api", []string{"--env-file", path}, func(string) string { return "" })
	if err == nil {
		t.Skip("godotenv accepted an unterminated quote")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error echoes a secret: %v", err)
	}
}

func TestS3Endpoint(t *testing.T) {
	for raw, want := range map[string]Endpoint{
		"127.0.0.1:9000":         {HostPort: "127.0.0.1:9000"},
		"http://minio:9000":      {HostPort: "minio:9000"},
		"https://s3.example:443": {HostPort: "s3.example:443", Secure: true},
	} {
		got, err := S3Endpoint("MINIO_ENDPOINT", raw)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"minio", "ftp://minio:21", "http://u:p@minio:9000", "127.0.0.1:0", ":9000"} {
		if _, err := S3Endpoint("MINIO_ENDPOINT", raw); err == nil {
			t.Errorf("%q accepted", raw)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact("dial postgres://u:p%40ss@h failed for p@ss", "p@ss")
	if strings.Contains(got, "p@ss") || strings.Contains(got, "p%40ss") {
		t.Errorf("Redact left the secret: %q", got)
	}
}

// .env.example documents every key the binaries read, and nothing else.
func TestEnvExampleDocumentsEveryKey(t *testing.T) {
	raw, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "#")
		if key, _, ok := strings.Cut(line, "="); ok && key == strings.ToUpper(key) && !strings.ContainsAny(key, " \t") && key != "" {
			documented[key] = true
		}
	}
	for _, key := range Keys {
		if !documented[key] {
			t.Errorf("%s is read but not in .env.example", key)
		}
		delete(documented, key)
	}
	for key := range documented {
		t.Errorf(".env.example sets %s, which no binary reads", key)
	}
}

func TestTrustedProxies(t *testing.T) {
	for raw, want := range map[string]string{
		"":                                     "[]",
		"  ":                                   "[]",
		"127.0.0.1":                            "[127.0.0.1/32]",
		"::1":                                  "[::1/128]",
		"10.0.0.0/8, 2001:db8::/32 ,192.0.2.1": "[10.0.0.0/8 2001:db8::/32 192.0.2.1/32]",
		"172.16.0.0/12":                        "[172.16.0.0/12]",
	} {
		got, err := TrustedProxies("TRUSTED_PROXIES", raw)
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("%q: %v, %v; want %s", raw, got, err, want)
		}
	}
	for raw, wantInError := range map[string]string{
		"proxy.example.org":   `"proxy.example.org" is not an IP address or CIDR prefix`,
		"10.0.0.0/33":         `"10.0.0.0/33" is not an IP address or CIDR prefix`,
		"10.0.0.1/8":          "did you mean 10.0.0.0/8?",
		"127.0.0.1,,10.0.0.1": "entry 2 is empty",
		"127.0.0.1,":          "entry 2 is empty",
		"10.0.0.1:8080":       `"10.0.0.1:8080" is not an IP address`,
		"fe80::1%eth0":        "has a zone",
		"::ffff:10.0.0.1":     "write it as IPv4 (10.0.0.1)",
		"0.0.0.0/0":           "trusts every address",
		"127.0.0.1, ::/0":     "trusts every address",
	} {
		_, err := TrustedProxies("TRUSTED_PROXIES", raw)
		if err == nil {
			t.Errorf("%q accepted", raw)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "TRUSTED_PROXIES: ") || !strings.Contains(msg, wantInError) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q; want one line naming the key and %q", raw, msg, wantInError)
		}
	}
}
