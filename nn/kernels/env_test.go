package kernels

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestKernelEnvForcesPath re-runs this test binary with RINGTRAIN_KERNELS
// set: the path is chosen once at init, and an unusable value falls back to
// the best path with a warning on the log.
func TestKernelEnvForcesPath(t *testing.T) {
	if os.Getenv("RINGTRAIN_KERNELS_CHILD") != "" {
		fmt.Printf("child path=%s\n", KernelPath())
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	best := KernelPaths()[0]
	tests := []struct{ env, want, warn string }{
		{"generic", "generic", ""},
		{"", best, ""},
		{"bogus", best, "unknown path"},
	}
	if cpuHasPath(PathAVX2) {
		tests = append(tests, struct{ env, want, warn string }{"avx2", "avx2", ""})
	}
	for _, tt := range tests {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKernelEnvForcesPath$", "-test.count=1")
		cmd.Env = append(os.Environ(), "RINGTRAIN_KERNELS_CHILD=1", KernelEnv+"="+tt.env)
		out, err := cmd.CombinedOutput()
		if errors.Is(err, syscall.ENOEXEC) {
			// An emulated run (GOARCH=arm64 go test -exec qemu-aarch64)
			// cannot re-exec its own binary without binfmt_misc.
			t.Skipf("cannot re-exec the test binary here: %v", err)
		}
		if err != nil {
			t.Fatalf("%s=%q: child failed: %v\n%s", KernelEnv, tt.env, err, out)
		}
		if !strings.Contains(string(out), "child path="+tt.want+"\n") {
			t.Errorf("%s=%q: want path %s, child said:\n%s", KernelEnv, tt.env, tt.want, out)
		}
		if tt.warn != "" && !strings.Contains(string(out), tt.warn) {
			t.Errorf("%s=%q: want a warning containing %q, child said:\n%s", KernelEnv, tt.env, tt.warn, out)
		}
	}
}

func cpuHasPath(path string) bool {
	for _, p := range KernelPaths() {
		if p == path {
			return true
		}
	}
	return false
}
