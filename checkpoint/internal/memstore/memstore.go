// Package memstore is an in-memory objstore.Store for tests.
package memstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/objstore"
)

// Store keeps objects in a map. The zero value is not usable; call New.
type Store struct {
	mu   sync.Mutex
	objs map[string][]byte
	mod  map[string]time.Time
	// PutHook, when set, runs before each Put is stored; an error fails the Put.
	PutHook func(key string) error
}

var _ objstore.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{objs: map[string][]byte{}, mod: map[string]time.Time{}} }

func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, objstore.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	var b []byte
	var err error
	if size >= 0 {
		b = make([]byte, size)
		_, err = io.ReadFull(r, b)
		if err == nil { // the reader must end exactly at size
			var one [1]byte
			if n, _ := r.Read(one[:]); n > 0 {
				err = fmt.Errorf("more than %d bytes", size)
			}
		}
	} else {
		b, err = io.ReadAll(r)
	}
	if err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.PutHook != nil {
		if err := s.PutHook(key); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = b
	s.mod[key] = time.Now()
	return nil
}

func (s *Store) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	if !ok {
		return objstore.ObjectInfo{}, fmt.Errorf("stat %q: %w", key, objstore.ErrNotExist)
	}
	return s.info(key, b), nil
}

func (s *Store) info(key string, b []byte) objstore.ObjectInfo {
	h := md5.Sum(b)
	return objstore.ObjectInfo{Key: key, Size: int64(len(b)), ModTime: s.mod[key], ETag: hex.EncodeToString(h[:])}
}

func (s *Store) List(ctx context.Context, prefix string) ([]objstore.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []objstore.ObjectInfo
	for k, b := range s.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s.info(k, b))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objs, key)
	delete(s.mod, key)
	return nil
}

func (s *Store) String() string { return "mem://" }

// Bytes returns a copy of an object, for tests that tamper with it.
func (s *Store) Bytes(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	return bytes.Clone(b), ok
}

// Keys lists every key, sorted.
func (s *Store) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.objs))
	for k := range s.objs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
