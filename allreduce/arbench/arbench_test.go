package arbench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64MiB", 64 << 20, true}, {"1GiB", 1 << 30, true}, {"512KiB", 512 << 10, true},
		{"1MB", 1000000, true}, {"4096", 4096, true}, {"0.5MiB", 512 << 10, true},
		{"lots", 0, false}, {"-1MiB", 0, false}, {"MiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestEnvDefaults(t *testing.T) {
	t.Setenv("RINGTRAIN_WORLD", "3")
	t.Setenv("RINGTRAIN_RAW_TCP", "false")
	t.Setenv("RINGTRAIN_SIZE", "1MiB")
	fs, cfg := NewFlagSet("x")
	if err := fs.Parse([]string{"-size", "2MiB"}); err != nil {
		t.Fatal(err)
	}
	if err := EnvDefaults(fs); err != nil {
		t.Fatal(err)
	}
	if cfg.World != 3 || cfg.RawTCP || cfg.Size != 2<<20 {
		t.Fatalf("cfg = %+v: want world 3 from env, raw-tcp false from env, size 2MiB from the flag", cfg)
	}
}

// The child-rank entry point: the test binary re-executes itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "rank" {
		if err := RankMain(context.Background(), os.Args[2:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestBenchRuns(t *testing.T) {
	for _, tr := range []string{"mem", "grpc", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := []string{"-world", "3", "-size", "1MiB", "-iters", "2", "-warmup", "1", "-transport", tr, "-raw-tcp=false"}
			if err := Main(context.Background(), args, []string{os.Args[0], "rank"}, &out, &errb); err != nil {
				t.Fatalf("%v\nstderr: %s", err, errb.String())
			}
			if !strings.Contains(out.String(), "transport="+tr+" world=3 size=1MiB") || !strings.Contains(out.String(), "busbw") {
				t.Fatalf("output: %s", out.String())
			}
		})
	}
}
