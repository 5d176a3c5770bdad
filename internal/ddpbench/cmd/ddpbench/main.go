// Command ddpbench is "ringtrain bench ddp" on its own (until the lead
// wires it into cmd/ringtrain): "ddpbench [flags]" runs the benchmark and
// re-executes itself as "ddpbench rank [flags]" for every rank.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/ringtrain/ringtrain/internal/ddpbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "rank" {
		err = ddpbench.RankMain(ctx, os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	} else {
		var exe string
		if exe, err = os.Executable(); err == nil {
			err = ddpbench.Main(ctx, os.Args[1:], []string{exe, "rank"}, os.Stdout, os.Stderr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ddpbench:", err)
		os.Exit(1)
	}
}
