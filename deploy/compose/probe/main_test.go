package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.Write([]byte(`{"health":"true"}`))
			return
		}
		http.Error(w, "unhealthy", http.StatusServiceUnavailable)
	}))
	defer ok.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := l.Addr().String()
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l2.Addr().String()
	l2.Close()
	defer l.Close()

	tests := []struct {
		name    string
		args    []string
		wantErr bool
		usage   bool
	}{
		{"http 200", []string{"http", ok.URL + "/health"}, false, false},
		{"http 503", []string{"http", ok.URL + "/other"}, true, false},
		{"http refused", []string{"http", "http://" + closed + "/"}, true, false},
		{"http bad url", []string{"http", "::"}, true, false},
		{"tcp open", []string{"tcp", open}, false, false},
		{"tcp closed", []string{"tcp", closed}, true, false},
		{"no args", nil, true, true},
		{"one arg", []string{"tcp"}, true, true},
		{"unknown", []string{"udp", open}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := run(ctx, tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("run(%q) = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if errors.Is(err, errUsage) != tt.usage {
				t.Fatalf("run(%q) = %v, usage error want %v", tt.args, err, tt.usage)
			}
		})
	}
}
