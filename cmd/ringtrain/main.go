// Command ringtrain is the one binary of the ringtrain cluster: training,
// data tools, checkpoints, transfer learning and the cluster's servers are
// its subcommands. It parses flags (each also settable as RINGTRAIN_<FLAG>)
// into config structs and calls the packages; it holds no logic of its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

type command struct {
	run   func(args []string) error
	brief string
}

func commands() map[string]command {
	return map[string]command{
		"train":       {runTrain, "train a net on a built-in dataset in this process"},
		"nets":        {runNets, "list the architectures"},
		"summary":     {runSummary, "print a Keras-style summary of a net"},
		"layers":      {runLayers, "print `index name` for every layer of a net"},
		"bench":       {runBench, "benchmarks: gemm, train, allreduce"},
		"data":        {runData, "datasets: import, pack, push, ls"},
		"local":       {runLocal, "run a whole cluster on this machine (embedded etcd, NATS, coordinator, N workers)"},
		"worker":      {runWorker, "join a cluster job as a worker"},
		"ckpt":        {runCkpt, "checkpoints: ls, show, verify, export"},
		"finetune":    {runFinetune, "fine-tune a new head on a pretrained net with frozen layers"},
		"predict":     {runPredict, "top-k classes of images (Keras decode_predictions)"},
		"features":    {runFeatures, "feature maps or pooled vectors of images (include_top=false)"},
		"coordinator": {runCoordinator, "run a coordinator (leader election, rings, API, /metrics)"},
		"submit":      {runSubmit, "submit a job spec to a coordinator"},
		"status":      {runStatus, "show job status"},
		"stop":        {runStop, "stop a job"},
		"watch":       {runWatch, "follow a job's events on NATS"},
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ringtrain <command> [flags]\n\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		if !strings.HasSuffix(n, "-rank") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, cmds[n].brief)
	}
	fmt.Fprintln(os.Stderr, "\nRun `ringtrain <command> -h` for its flags; every flag may also be set as RINGTRAIN_<FLAG> (dashes as underscores).")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands()[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "ringtrain: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "ringtrain %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// parseFlags parses args, first taking defaults from RINGTRAIN_<NAME>
// environment variables so that command-line flags win.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		key := "RINGTRAIN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("environment %s=%q: %w", key, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	return fs.Parse(args)
}

// signalContext is cancelled by SIGINT/SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
