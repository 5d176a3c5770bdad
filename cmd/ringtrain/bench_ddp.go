package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/ringtrain/ringtrain/internal/ddpbench"
)

// benchDDP is "ringtrain bench ddp --net resnet18 --input 32 --batch 64
// --world 2 [--overlap=true|false] [--steps 20] [--threads 1]
// [--bucket-mb 25] [--fp16]": world rank processes on loopback (this binary
// re-executed as "bench ddp-rank"), each a replica of the same net on
// random data, time synchronous steps over a gRPC ring; one line on
// stdout. Every flag can also come from RINGTRAIN_<FLAG>.
func benchDDP(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench ddp: finding this binary: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return ddpbench.Main(ctx, args, []string{exe, "bench", "ddp-rank"}, os.Stdout, os.Stderr)
}

// benchDDPRank is the hidden "ringtrain bench ddp-rank": one rank process
// started by benchDDP (it talks to its parent on stdin/stdout).
func benchDDPRank(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return ddpbench.RankMain(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}
