// Command arbench runs the all-reduce benchmark until the main ringtrain
// binary wires "ringtrain bench allreduce": arbench [flags], and
// "arbench rank [flags]" for the child ranks it starts.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/ringtrain/ringtrain/allreduce/arbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "rank" {
		err = arbench.RankMain(ctx, os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	} else {
		err = arbench.Main(ctx, os.Args[1:], []string{exe, "rank"}, os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "arbench:", err)
		os.Exit(1)
	}
}
