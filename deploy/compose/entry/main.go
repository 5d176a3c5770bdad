//go:build unix

// Command entry is the entrypoint of the ringtrain image. Scratch images
// have no shell, so it does the two things a shell script would:
//
//   - it replaces {ip} (this container's IPv4 address) and {host} (its
//     hostname) in the arguments and in RINGTRAIN_* environment values, so
//     that a worker scaled with `--scale worker=N` can advertise an address
//     its peers can dial: `entry ringtrain worker --advertise {ip}:7000`.
//     Docker's DNS does not resolve a container's short-id hostname, but its
//     address on the compose network is reachable from every peer.
//   - it runs a sequence of commands separated by a literal "&&" argument,
//     each to success, then execs the last one (which becomes PID 1 and gets
//     the container's signals).
//
// ENTRY_INTERFACE=eth0 picks the interface whose address {ip} is; the
// default is the first up, non-loopback interface with an IPv4 address.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "entry:", err)
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	cmds, err := splitCommands(args)
	if err != nil {
		return err
	}
	vars := map[string]string{}
	if needsVar(args, os.Environ(), "{ip}") {
		ifs, err := interfaces()
		if err != nil {
			return err
		}
		ip, err := pickIP(ifs, os.Getenv("ENTRY_INTERFACE"))
		if err != nil {
			return err
		}
		vars["{ip}"] = ip
	}
	if host, err := os.Hostname(); err == nil {
		vars["{host}"] = host
	}
	env := expandEnv(os.Environ(), vars)
	for i, c := range cmds {
		c = expand(c, vars)
		path, err := exec.LookPath(c[0])
		if err != nil {
			return fmt.Errorf("command %q: %w", c[0], err)
		}
		fmt.Fprintf(os.Stderr, "entry: %s\n", strings.Join(c, " "))
		if i == len(cmds)-1 {
			return syscall.Exec(path, c, env)
		}
		cmd := exec.Command(path, c[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdin, os.Stdout, os.Stderr, env
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(c, " "), err)
		}
	}
	return nil
}

// splitCommands splits args at literal "&&" arguments; no command may be empty.
func splitCommands(args []string) ([][]string, error) {
	var cmds [][]string
	cur := []string{}
	for _, a := range args {
		if a == "&&" {
			if len(cur) == 0 {
				return nil, errors.New("empty command before \"&&\"")
			}
			cmds, cur = append(cmds, cur), []string{}
			continue
		}
		cur = append(cur, a)
	}
	if len(cur) == 0 {
		return nil, errors.New("usage: entry PROGRAM [ARGS...] [&& PROGRAM [ARGS...]]...")
	}
	return append(cmds, cur), nil
}

// expand replaces every variable in every argument; it returns a new slice.
func expand(args []string, vars map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for k, v := range vars {
			a = strings.ReplaceAll(a, k, v)
		}
		out[i] = a
	}
	return out
}

// expandEnv expands the values of RINGTRAIN_* variables only, so that
// other software's settings pass through untouched.
func expandEnv(env []string, vars map[string]string) []string {
	out := make([]string, len(env))
	for i, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "RINGTRAIN_") {
			kv = k + "=" + expand([]string{v}, vars)[0]
		}
		out[i] = kv
	}
	return out
}

func needsVar(args, env []string, v string) bool {
	for _, a := range args {
		if strings.Contains(a, v) {
			return true
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "RINGTRAIN_") && strings.Contains(kv, v) {
			return true
		}
	}
	return false
}

// iface is what pickIP needs to know of a network interface.
type iface struct {
	Name  string
	Up    bool
	Loop  bool
	Addrs []net.IP
}

func interfaces() ([]iface, error) {
	nis, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []iface
	for _, ni := range nis {
		f := iface{Name: ni.Name, Up: ni.Flags&net.FlagUp != 0, Loop: ni.Flags&net.FlagLoopback != 0}
		addrs, err := ni.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of interface %s: %w", ni.Name, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				f.Addrs = append(f.Addrs, n.IP)
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// pickIP returns the first IPv4 address of the interface named name, or,
// when name is empty, of the first up, non-loopback interface that has one.
func pickIP(ifs []iface, name string) (string, error) {
	for _, f := range ifs {
		if name != "" && f.Name != name {
			continue
		}
		if name == "" && (!f.Up || f.Loop) {
			continue
		}
		for _, ip := range f.Addrs {
			if v4 := ip.To4(); v4 != nil && !v4.IsLoopback() && !v4.IsLinkLocalUnicast() {
				return v4.String(), nil
			}
		}
		if name != "" {
			return "", fmt.Errorf("interface %s has no IPv4 address", name)
		}
	}
	if name != "" {
		return "", fmt.Errorf("no interface named %s", name)
	}
	return "", errors.New("no up, non-loopback interface with an IPv4 address")
}
