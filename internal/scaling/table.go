package scaling

import (
	"fmt"
	"io"
	"strings"
)

// Scenario is a named workload whose gradients may go out as fp32 or fp16.
type Scenario struct {
	Name string
	// Source says where the compute time comes from.
	Source string
	Workload
}

// NamedLink is a link with a label for tables.
type NamedLink struct {
	Name string
	Link
}

// Row is one line of a table: a scenario on a link at a world size.
type Row struct {
	Scenario, Link string
	Prediction
}

// Table predicts every scenario on every link at every world size.
func Table(scs []Scenario, links []NamedLink, worlds []int) ([]Row, error) {
	var rows []Row
	for _, s := range scs {
		for _, l := range links {
			for _, n := range worlds {
				p, err := Predict(s.Workload, l.Link, n)
				if err != nil {
					return nil, fmt.Errorf("scenario %s on %s: %w", s.Name, l.Name, err)
				}
				rows = append(rows, Row{Scenario: s.Name, Link: l.Name, Prediction: p})
			}
		}
	}
	return rows, nil
}

// WriteMarkdown writes one markdown table per scenario: links as rows,
// world sizes as columns, each cell "efficiency (exposed comm ms)".
func WriteMarkdown(w io.Writer, scs []Scenario, links []NamedLink, worlds []int) error {
	for _, s := range scs {
		fmt.Fprintf(w, "**%s** — compute %.1f ms/step (%s), gradients %.1f MB in %d bucket(s), backward %.0f%% of compute, overlap %.0f%%\n\n",
			s.Name, s.ComputeSec*1e3, s.Source, s.GradBytes/1e6, max(s.Buckets, 1), s.BackwardFrac*100, s.Overlap*100)
		hdr := []string{"link"}
		sep := []string{"---"}
		for _, n := range worlds {
			hdr = append(hdr, fmt.Sprintf("n=%d", n))
			sep = append(sep, "---:")
		}
		fmt.Fprintf(w, "| %s |\n| %s |\n", strings.Join(hdr, " | "), strings.Join(sep, " | "))
		for _, l := range links {
			cells := []string{l.Name}
			for _, n := range worlds {
				p, err := Predict(s.Workload, l.Link, n)
				if err != nil {
					return fmt.Errorf("scenario %s on %s: %w", s.Name, l.Name, err)
				}
				cells = append(cells, fmt.Sprintf("%.1f%% (%.0f ms)", p.Efficiency*100, p.ExposedSec*1e3))
			}
			if _, err := fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | ")); err != nil {
				return err
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}
