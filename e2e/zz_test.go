package e2e

import (
	"net/http"
	"testing"

	"github.com/docuvault/docuvault/internal/testenv"
)

func TestZZ(t *testing.T) {
	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	env := testenv.ServiceEnv(t, db, s3)
	api := start(t, "api", env)
	base := "http://" + api.addr("api")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	content := make([]byte, 16<<10)
	body, ct := multipartOf("bench.bin", content)
	for range 4 {
		t.Logf("api %.1f/s", rate(1500, 16, func(i int) error { return apiUpload(client, base, ct, body.Bytes()) }))
	}
}
