//go:build unix

package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestSplitCommands(t *testing.T) {
	tests := []struct {
		args    []string
		want    [][]string
		wantErr bool
	}{
		{[]string{"ringtrain", "worker"}, [][]string{{"ringtrain", "worker"}}, false},
		{[]string{"a", "x", "&&", "b", "&&", "c", "y"}, [][]string{{"a", "x"}, {"b"}, {"c", "y"}}, false},
		{[]string{"a", "&&x"}, [][]string{{"a", "&&x"}}, false},
		{nil, nil, true},
		{[]string{"&&", "b"}, nil, true},
		{[]string{"a", "&&"}, nil, true},
		{[]string{"a", "&&", "&&", "b"}, nil, true},
	}
	for _, tt := range tests {
		got, err := splitCommands(tt.args)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitCommands(%q) = %q, %v; want %q, error %v", tt.args, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"{ip}": "172.18.0.5", "{host}": "3f2a9c"}
	got := expand([]string{"--advertise", "{ip}:7000", "--sample-log=/s/{host}.samples", "{ip}{ip}", "plain"}, vars)
	want := []string{"--advertise", "172.18.0.5:7000", "--sample-log=/s/3f2a9c.samples", "172.18.0.5172.18.0.5", "plain"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("expand = %q, want %q", got, want)
	}
	env := expandEnv([]string{"RINGTRAIN_ADVERTISE={ip}:7000", "OTHER={ip}", "RINGTRAIN_X=a=b{host}"}, vars)
	wantEnv := []string{"RINGTRAIN_ADVERTISE=172.18.0.5:7000", "OTHER={ip}", "RINGTRAIN_X=a=b3f2a9c"}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Fatalf("expandEnv = %q, want %q", env, wantEnv)
	}
	if !needsVar(nil, []string{"RINGTRAIN_ADVERTISE={ip}:1"}, "{ip}") || needsVar([]string{"a"}, []string{"X={ip}"}, "{ip}") {
		t.Fatal("needsVar wrong")
	}
}

func TestPickIP(t *testing.T) {
	lo := iface{Name: "lo", Up: true, Loop: true, Addrs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}}
	down := iface{Name: "eth9", Up: false, Addrs: []net.IP{net.ParseIP("10.9.9.9")}}
	v6 := iface{Name: "eth1", Up: true, Addrs: []net.IP{net.ParseIP("fe80::1"), net.ParseIP("2001:db8::1")}}
	eth0 := iface{Name: "eth0", Up: true, Addrs: []net.IP{net.ParseIP("fe80::2"), net.ParseIP("169.254.1.1"), net.ParseIP("172.18.0.5")}}
	eth2 := iface{Name: "eth2", Up: true, Addrs: []net.IP{net.ParseIP("10.0.0.7")}}
	tests := []struct {
		name    string
		ifs     []iface
		pick    string
		want    string
		wantErr bool
	}{
		{"first non-loopback", []iface{lo, down, v6, eth0, eth2}, "", "172.18.0.5", false},
		{"named", []iface{lo, eth0, eth2}, "eth2", "10.0.0.7", false},
		{"named down still used", []iface{lo, down}, "eth9", "10.9.9.9", false},
		{"named no v4", []iface{v6}, "eth1", "", true},
		{"named missing", []iface{eth0}, "eth5", "", true},
		{"only loopback", []iface{lo}, "", "", true},
		{"none", nil, "", "", true},
	}
	for _, tt := range tests {
		got, err := pickIP(tt.ifs, tt.pick)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%s: pickIP = %q, %v; want %q, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestBinary runs the real entry binary: a sequence, substitution in args
// and env, exec of the last command, and a failing first command.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "entry")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	marker := filepath.Join(dir, "first")
	cmd := exec.Command(bin, sh, "-c", "echo one > "+marker, "&&", sh, "-c", `echo "$0 $RINGTRAIN_ADVERTISE $$"`, "{host}")
	cmd.Env = append(os.Environ(), "RINGTRAIN_ADVERTISE={ip}:7000")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("entry: %v", err)
	}
	host, _ := os.Hostname()
	f := strings.Fields(string(out))
	if len(f) != 3 || f[0] != host || !strings.HasSuffix(f[1], ":7000") || net.ParseIP(strings.TrimSuffix(f[1], ":7000")).To4() == nil {
		t.Fatalf("output %q: want hostname %s and an IPv4 advertise address", out, host)
	}
	// exec, not a child: the last command has entry's pid.
	if f[2] != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("last command ran as pid %s, entry was %d: not exec'd", f[2], cmd.Process.Pid)
	}
	if b, _ := os.ReadFile(marker); string(b) != "one\n" {
		t.Errorf("first command did not run: %q", b)
	}
	err = exec.Command(bin, sh, "-c", "exit 3", "&&", sh, "-c", "echo no").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("failing first command: err %v, want exit status 3", err)
	}
}
