package store

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tapline/tapline/archive/internal/s3test"
)

// sseRecorder records the encryption headers of every write request.
type sseRecorder struct {
	mu     sync.Mutex
	writes []string // "METHOD kind sse kms-key"
}

func (r *sseRecorder) Do(req *http.Request) (*http.Response, error) {
	kind := ""
	switch {
	case req.Method == http.MethodPut && req.URL.Query().Has("partNumber"):
		kind = "part" // parts carry no SSE header (S3 takes it from the upload)
	case req.Method == http.MethodPut:
		kind = "put"
	case req.Method == http.MethodPost && req.URL.Query().Has("uploads"):
		kind = "create-multipart"
	}
	if kind != "" {
		r.mu.Lock()
		r.writes = append(r.writes, kind+" "+req.Header.Get("X-Amz-Server-Side-Encryption")+" "+req.Header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"))
		r.mu.Unlock()
	}
	return http.DefaultClient.Do(req)
}

// TestS3SSE: with --sse every object write (single PUT and multipart
// upload) asks for server-side encryption, against a real S3 server.
func TestS3SSE(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	for _, tc := range []struct {
		opts S3Options
		want string
	}{
		{S3Options{SSE: SSEAES256}, "AES256 "},
		{S3Options{}, " "},
	} {
		rec := &sseRecorder{}
		o := tc.opts
		o.Endpoint, o.PathStyle, o.PartSize = srv.Endpoint(), true, 5<<20
		s, err := NewS3WithClient(ctx, s3test.Bucket, "sse", o, rec)
		if err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("x"), 6<<20)
		if err := s.Put(ctx, "small", []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "big", big); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "big"); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read back: %v", err)
		}
		var puts, creates, parts int
		for _, w := range rec.writes {
			kind, hdr, _ := strings.Cut(w, " ")
			switch kind {
			case "put":
				puts++
			case "create-multipart":
				creates++
			case "part":
				parts++
				continue
			default:
				continue
			}
			if hdr != tc.want {
				t.Errorf("%+v: %s carries encryption %q, want %q", tc.opts, kind, hdr, tc.want)
			}
		}
		if puts != 1 || creates != 1 || parts != 2 {
			t.Fatalf("writes seen %v: want one PUT and one multipart upload of two 5 MiB parts", rec.writes)
		}
	}
}

// TestSSEKMSRequest: aws:kms with a key id is asked for on every write.
// versitygw does not implement KMS, so this checks the requests only.
func TestSSEKMSRequest(t *testing.T) {
	srv := s3test.Start(t)
	rec := &sseRecorder{}
	o := S3Options{Endpoint: srv.Endpoint(), PathStyle: true, PartSize: 5 << 20, SSE: SSEKMS, SSEKMSKeyID: "alias/tapline"}
	s, err := NewS3WithClient(context.Background(), s3test.Bucket, "kms", o, rec)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Put(context.Background(), "small", []byte("hello"))
	_ = s.Put(context.Background(), "big", bytes.Repeat([]byte("y"), 6<<20))
	var n int
	for _, w := range rec.writes {
		if strings.HasPrefix(w, "put ") || strings.HasPrefix(w, "create-multipart ") {
			n++
			if !strings.HasSuffix(w, " aws:kms alias/tapline") {
				t.Errorf("write %q does not ask for aws:kms with the key", w)
			}
		}
	}
	if n < 2 {
		t.Fatalf("writes seen %v", rec.writes)
	}
}

func TestSSEValidate(t *testing.T) {
	for _, o := range []S3Options{{SSE: "aes"}, {SSEKMSKeyID: "k"}, {SSE: SSEAES256, SSEKMSKeyID: "k"}} {
		if o.ValidateSSE() == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	for _, o := range []S3Options{{}, {SSE: SSEAES256}, {SSE: SSEKMS}, {SSE: SSEKMS, SSEKMSKeyID: "arn:aws:kms:eu-west-1:1:key/x"}} {
		if err := o.ValidateSSE(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
