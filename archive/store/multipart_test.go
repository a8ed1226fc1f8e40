package store

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tapline/tapline/archive/internal/s3test"
)

// failSecondPart fails the second part upload of every multipart upload.
type failSecondPart struct{ parts atomic.Int32 }

func (f *failSecondPart) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.URL.Query().Get("partNumber") == "2" {
		f.parts.Add(1)
		return nil, errors.New("injected: part 2 lost")
	}
	return http.DefaultClient.Do(req)
}

// TestMultipartFailureAborts: a multipart upload whose part fails returns
// the error (the chunk is retried later) and leaves no upload with stored
// parts behind in the bucket, against a real S3 server.
func TestMultipartFailureAborts(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	f := &failSecondPart{}
	o := S3Options{Endpoint: srv.Endpoint(), PathStyle: true, PartSize: 5 << 20}
	s, err := NewS3WithClient(ctx, s3test.Bucket, "mpu", o, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "big", bytes.Repeat([]byte("z"), 12<<20)); err == nil {
		t.Fatal("Put succeeded with a failing part")
	}
	if f.parts.Load() == 0 {
		t.Fatal("no second part was attempted: not a multipart upload")
	}
	if _, err := s.Get(ctx, "big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after a failed upload: %v, want not found", err)
	}
	out, err := s.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left behind", len(out.Uploads))
	}
}
