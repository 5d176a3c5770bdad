// Package objstore is the one interface ringtrain uses for blob storage:
// datasets, shards and checkpoints live behind it, on S3-compatible servers
// (minio-go) or in a local folder.
package objstore

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotExist is returned (wrapped) when a key or bucket does not exist.
var ErrNotExist = errors.New("object does not exist")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	ETag    string
}

// Store is a flat key/value blob store. Keys use '/' as separator.
// Implementations are safe for concurrent use. Every call blocks until done
// or until ctx ends.
type Store interface {
	// Get opens the object for reading; the caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Put stores size bytes from r under key, replacing any object there.
	// A reader never observes a partially written object.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Stat describes one object; ErrNotExist when absent.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns every object whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store in messages (s3://bucket/prefix, /dir).
	String() string
}
