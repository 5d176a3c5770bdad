// Command probe is the health check of the offline (FROM scratch) images,
// which have no shell, curl or wget:
//
//	probe http http://127.0.0.1:2379/health   exit 0 on a 2xx answer
//	probe tcp 127.0.0.1:4222                 exit 0 when a TCP connect succeeds
//
// It exits 1 with a one-line reason otherwise, within -timeout (2s).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, fs.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

// errUsage is returned for a malformed command line.
var errUsage = errors.New("usage: probe [-timeout 2s] http URL | tcp HOST:PORT")

// run performs one check named by args.
func run(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return errUsage
	}
	switch args[0] {
	case "http":
		return checkHTTP(ctx, args[1])
	case "tcp":
		return checkTCP(ctx, args[1])
	}
	return fmt.Errorf("unknown check %q: %w", args[0], errUsage)
}

func checkHTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request for %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func checkTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	return c.Close()
}
