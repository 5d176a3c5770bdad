package objstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrAccessDenied is returned (wrapped) when the server refuses the
// credentials; retrying with the same ones will not help.
var ErrAccessDenied = errors.New("access denied")

// RangeGetter is implemented by stores that can read part of an object
// (both Local and S3 do): packed shards are read one sample at a time.
type RangeGetter interface {
	// GetRange opens length bytes of key starting at off; the caller closes it.
	GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error)
}

// S3Config says how to reach an S3-compatible server.
type S3Config struct {
	// Endpoint is host:port or a URL (http:// means no TLS).
	Endpoint  string
	AccessKey string
	SecretKey string
	// SessionToken is optional (temporary credentials).
	SessionToken string
	Region       string
	// Insecure disables TLS when Endpoint has no scheme.
	Insecure bool
	// PathStyle forces path-style addressing (http://host/bucket/key), which
	// MinIO, versitygw and gofakes3 want; otherwise minio-go decides.
	PathStyle bool
	// DisableContentSHA256 sends UNSIGNED-PAYLOAD; required with gofakes3,
	// which corrupts multipart uploads with streaming signatures.
	DisableContentSHA256 bool
	// CredentialsFile is an AWS-style ini file ([default] aws_access_key_id=...);
	// Profile picks its section ("default" when empty).
	CredentialsFile string
	Profile         string
	// PartSize for multipart uploads (0: 16 MiB).
	PartSize uint64
}

// Validate checks that the config can reach a server.
func (c S3Config) Validate() error {
	if c.Endpoint == "" {
		return errors.New("s3 config: no endpoint (set --s3-endpoint or RINGTRAIN_S3_ENDPOINT)")
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("s3 config: access key and secret key must be given together")
	}
	return nil
}

// WithEnv fills empty fields from the environment (getenv is os.Getenv in
// production): RINGTRAIN_S3_ENDPOINT, RINGTRAIN_S3_ACCESS_KEY /
// RINGTRAIN_S3_SECRET_KEY, then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, AWS_REGION, then the credentials file
// (RINGTRAIN_S3_CREDENTIALS_FILE, AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials).
func (c S3Config) WithEnv(getenv func(string) string) (S3Config, error) {
	first := func(cur string, names ...string) string {
		if cur != "" {
			return cur
		}
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	c.Endpoint = first(c.Endpoint, "RINGTRAIN_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	c.Region = first(c.Region, "RINGTRAIN_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
	if c.AccessKey == "" && c.SecretKey == "" {
		if ak, sk := getenv("RINGTRAIN_S3_ACCESS_KEY"), getenv("RINGTRAIN_S3_SECRET_KEY"); ak != "" || sk != "" {
			c.AccessKey, c.SecretKey = ak, sk
		} else if ak, sk := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); ak != "" || sk != "" {
			c.AccessKey, c.SecretKey = ak, sk
			c.SessionToken = first(c.SessionToken, "AWS_SESSION_TOKEN")
		}
	}
	if c.AccessKey == "" && c.SecretKey == "" {
		file := first(c.CredentialsFile, "RINGTRAIN_S3_CREDENTIALS_FILE", "AWS_SHARED_CREDENTIALS_FILE")
		explicit := file != ""
		if !explicit {
			if home := getenv("HOME"); home != "" {
				file = filepath.Join(home, ".aws", "credentials")
			}
		}
		if file != "" {
			profile := first(c.Profile, "RINGTRAIN_S3_PROFILE", "AWS_PROFILE")
			ak, sk, tok, err := ReadCredentialsFile(file, profile)
			if err != nil && (explicit || !errors.Is(err, os.ErrNotExist)) {
				return c, err
			}
			c.AccessKey, c.SecretKey, c.SessionToken = ak, sk, tok
		}
	}
	return c, nil
}

// ReadCredentialsFile reads an AWS-style credentials ini file.
func ReadCredentialsFile(path, profile string) (access, secret, token string, err error) {
	if profile == "" {
		profile = "default"
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", "", fmt.Errorf("s3 credentials file: %w", err)
	}
	defer f.Close()
	section := ""
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			section = strings.TrimSpace(strings.TrimPrefix(line[1:len(line)-1], "profile "))
			continue
		}
		if section != profile {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "aws_access_key_id", "access_key":
			access, found = strings.TrimSpace(v), true
		case "aws_secret_access_key", "secret_key":
			secret = strings.TrimSpace(v)
		case "aws_session_token":
			token = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", "", fmt.Errorf("s3 credentials file %s: %w", path, err)
	}
	if !found || secret == "" {
		return "", "", "", fmt.Errorf("s3 credentials file %s: profile [%s] has no aws_access_key_id/aws_secret_access_key", path, profile)
	}
	return access, secret, token, nil
}

// S3 is a Store over one bucket of an S3-compatible server.
type S3 struct {
	cl     *minio.Client
	bucket string
	cfg    S3Config
}

var (
	_ Store       = (*S3)(nil)
	_ RangeGetter = (*S3)(nil)
)

// NewS3 connects to bucket and checks that it exists and that the
// credentials are accepted (errors wrap ErrNotExist or ErrAccessDenied).
func NewS3(ctx context.Context, cfg S3Config, bucket string) (*S3, error) {
	s, err := newS3(cfg, bucket)
	if err != nil {
		return nil, err
	}
	ok, err := s.cl.BucketExists(ctx, bucket)
	if err != nil {
		return nil, s.wrap("open bucket", "", err)
	}
	if !ok {
		// A HEAD answer has no body: some servers say 404 for unknown keys
		// too. A listing tells the two apart.
		if err := s.probe(ctx); err != nil && !errors.Is(err, ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("s3://%s at %s: bucket does not exist: %w", bucket, cfg.Endpoint, ErrNotExist)
	}
	return s, nil
}

// probe lists at most one key, to learn why a bucket looks absent.
func (s *S3) probe(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for oi := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{MaxKeys: 1}) {
		if oi.Err != nil {
			return s.wrap("open bucket", "", oi.Err)
		}
		break
	}
	return nil
}

// CreateBucket makes the bucket if it is missing and returns a store on it.
func CreateBucket(ctx context.Context, cfg S3Config, bucket string) (*S3, error) {
	s, err := newS3(cfg, bucket)
	if err != nil {
		return nil, err
	}
	ok, err := s.cl.BucketExists(ctx, bucket)
	if err != nil {
		return nil, s.wrap("open bucket", "", err)
	}
	if !ok {
		if err := s.cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, s.wrap("create bucket", "", err)
		}
	}
	return s, nil
}

// s3HeaderTimeout bounds the wait for a response's headers (see newS3).
const s3HeaderTimeout = 15 * time.Second

func newS3(cfg S3Config, bucket string) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if bucket == "" {
		return nil, errors.New("s3: empty bucket name")
	}
	host, secure := cfg.Endpoint, !cfg.Insecure
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil {
			return nil, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
	}
	// A worker cut off by a partition comes back with its old connections
	// dead (its address may even have changed): with minio-go's defaults a
	// request on one waits a minute for response headers, stalling training
	// after every rejoin. Object GETs answer their headers in milliseconds
	// and minio-go retries a timed-out request on a fresh connection, so
	// wait 15 s, and probe idle connections every 5 s.
	tr.ResponseHeaderTimeout = s3HeaderTimeout
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3}}).DialContext
	opts := &minio.Options{Secure: secure, Region: cfg.Region, Transport: tr}
	if cfg.AccessKey != "" {
		opts.Creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		opts.Creds = credentials.NewStatic("", "", "", credentials.SignatureAnonymous)
	}
	if cfg.PathStyle {
		opts.BucketLookup = minio.BucketLookupPath
	}
	cl, err := minio.New(host, opts)
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
	}
	return &S3{cl: cl, bucket: bucket, cfg: cfg}, nil
}

func (s *S3) String() string { return "s3://" + s.bucket }

// Bucket is the bucket name.
func (s *S3) Bucket() string { return s.bucket }

// wrap turns minio errors into ours, naming the object and the server.
func (s *S3) wrap(op, key string, err error) error {
	what := "s3://" + s.bucket
	if key != "" {
		what += "/" + key
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" ||
		strings.HasSuffix(resp.Code, "UserNotFound") || resp.StatusCode == http.StatusForbidden:
		// (versitygw answers an unknown key with 404 XAdminUserNotFound)
		return fmt.Errorf("%s %s at %s: %w: check the access/secret keys (%v)", op, what, s.cfg.Endpoint, ErrAccessDenied, err)
	case resp.Code == "NoSuchKey" || resp.Code == "NoSuchBucket" || resp.Code == "NotFound" ||
		(resp.StatusCode == http.StatusNotFound && resp.Code == ""):
		return fmt.Errorf("%s %s at %s: %w (%v)", op, what, s.cfg.Endpoint, ErrNotExist, err)
	}
	return fmt.Errorf("%s %s at %s: %w", op, what, s.cfg.Endpoint, err)
}

func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return s.get(ctx, key, minio.GetObjectOptions{})
}

func (s *S3) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	var o minio.GetObjectOptions
	if length <= 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err := o.SetRange(off, off+length-1); err != nil {
		return nil, fmt.Errorf("get s3://%s/%s range %d+%d: %w", s.bucket, key, off, length, err)
	}
	return s.get(ctx, key, o)
}

func (s *S3) get(ctx context.Context, key string, o minio.GetObjectOptions) (io.ReadCloser, error) {
	obj, err := s.cl.GetObject(ctx, s.bucket, key, o)
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	// Stat sends the request now, so a missing key fails here rather than
	// on the first Read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.wrap("get", key, err)
	}
	return &s3Reader{obj: obj, s: s, key: key}, nil
}

type s3Reader struct {
	obj *minio.Object
	s   *S3
	key string
}

func (r *s3Reader) Read(p []byte) (int, error) {
	n, err := r.obj.Read(p)
	if err != nil && err != io.EOF {
		err = r.s.wrap("read", r.key, err)
	}
	return n, err
}

func (r *s3Reader) Close() error { return r.obj.Close() }

func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	part := s.cfg.PartSize
	if part == 0 {
		part = 16 << 20
	}
	_, err := s.cl.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{
		DisableContentSha256: s.cfg.DisableContentSHA256,
		PartSize:             part,
		ContentType:          "application/octet-stream",
	})
	if err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	oi, err := s.cl.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.wrap("stat", key, err)
	}
	return ObjectInfo{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag}, nil
}

func (s *S3) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio's listing goroutine on early return
	var out []ObjectInfo
	for oi := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, s.wrap("list", prefix, oi.Err)
		}
		if strings.HasSuffix(oi.Key, "/") {
			continue // folder markers
		}
		out = append(out, ObjectInfo{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *S3) Delete(ctx context.Context, key string) error {
	if err := s.cl.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil
		}
		return s.wrap("delete", key, err)
	}
	return nil
}

// Open parses uri and opens its store: "s3://bucket/prefix" on the server of
// cfg (filled from the environment by the caller, see WithEnv), anything
// else a local folder. prefix is "" or ends in '/'. For s3 URIs a missing
// bucket is an error wrapping ErrNotExist.
func Open(ctx context.Context, uri string, cfg S3Config) (Store, string, error) {
	bucket, prefix, isS3, err := ParseURI(uri)
	if err != nil {
		return nil, "", err
	}
	if !isS3 {
		l, err := NewLocal(strings.TrimPrefix(uri, "file://"))
		if err != nil {
			return nil, "", err
		}
		return l, "", nil
	}
	s, err := NewS3(ctx, cfg, bucket)
	if err != nil {
		return nil, "", err
	}
	return s, prefix, nil
}

// ParseURI splits "s3://bucket/some/prefix" into bucket and "some/prefix/".
// isS3 is false for local paths (file:// is stripped).
func ParseURI(uri string) (bucket, prefix string, isS3 bool, err error) {
	rest, ok := strings.CutPrefix(uri, "s3://")
	if !ok {
		return "", "", false, nil
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", true, fmt.Errorf("uri %q: no bucket", uri)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return bucket, prefix, true, nil
}
