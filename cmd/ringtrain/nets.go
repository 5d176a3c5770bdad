package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
)

func runNets(args []string) error {
	fs := flag.NewFlagSet("nets", flag.ContinueOnError)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tINPUT\tMIN\tPREPROCESS\tDESCRIPTION")
	for _, n := range nets.Names() {
		s, _ := nets.Lookup(n)
		fmt.Fprintf(tw, "%s\t%dx%dx%d\t%d\t%s\t%s\n", s.Name, s.DefaultChannels, s.DefaultInput, s.DefaultInput, s.MinInput, s.Preprocess, s.Description)
	}
	return tw.Flush()
}

// netFlags registers the flags that select a net variant.
func netFlags(fs *flag.FlagSet) (name *string, cfg *nets.Config, includeTop *bool) {
	cfg = &nets.Config{}
	name = fs.String("net", "", "architecture (see `ringtrain nets`)")
	fs.IntVar(&cfg.Classes, "classes", 0, "number of classes (0 = 1000)")
	fs.IntVar(&cfg.InputSize, "input", 0, "input height and width (0 = the net's default)")
	fs.IntVar(&cfg.InChannels, "channels", 0, "input channels (0 = the net's default)")
	fs.StringVar(&cfg.Pooling, "pooling", "", "with --include-top=false: global avg or max pooling")
	fs.BoolVar(&cfg.AuxLogits, "aux-logits", false, "GoogLeNet auxiliary classifiers")
	includeTop = fs.Bool("include-top", true, "keep the classifier (Keras include_top)")
	return name, cfg, includeTop
}

func buildFromFlags(name string, cfg *nets.Config, includeTop bool) (*nn.Model, error) {
	if name == "" {
		return nil, fmt.Errorf("--net is required (one of %s)", strings.Join(nets.Names(), ", "))
	}
	cfg.NoTop = !includeTop
	return nets.Build(name, *cfg)
}

func runSummary(args []string) error {
	fs := flag.NewFlagSet("summary", flag.ContinueOnError)
	name, cfg, top := netFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	m, err := buildFromFlags(*name, cfg, *top)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(os.Stdout, "Model: %s (input %v)\n", *name, m.In)
	fmt.Fprintln(tw, "#\tLayer (name)\tType\tOutput shape\tParam #\tTrainable\t")
	for _, l := range m.Layers {
		count, trainable := 0, true
		hasParams := false
		for _, p := range l.Module.Params() {
			if p.Kind == nn.Weight {
				count += p.Size()
				hasParams = true
				trainable = trainable && p.Trainable
			}
		}
		tr := "-"
		if hasParams {
			tr = fmt.Sprint(trainable)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t\n", l.Index, l.Name, l.Module.Kind(), outShape(l.Out), commas(count), tr)
	}
	tw.Flush()
	total, trainable := m.NumParams()
	fmt.Printf("Total params: %s\nTrainable params: %s\nNon-trainable params: %s\n", commas(total), commas(trainable), commas(total-trainable))
	return nil
}

func outShape(s nn.Shape) string {
	parts := []string{"None"}
	for _, d := range s {
		parts = append(parts, fmt.Sprint(d))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func commas(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func runLayers(args []string) error {
	fs := flag.NewFlagSet("layers", flag.ContinueOnError)
	name, cfg, top := netFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	m, err := buildFromFlags(*name, cfg, *top)
	if err != nil {
		return err
	}
	for _, l := range m.Layers {
		fmt.Printf("%d %s\n", l.Index, l.Name)
	}
	return nil
}
