package coordinator

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPHandler serves /metrics (this coordinator's registry) and /healthz
// (200 while the etcd session is live, 503 otherwise, JSON body either way).
func (c *Coordinator) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{Registry: c.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ok := c.Healthy()
		body := struct {
			ID      string   `json:"id"`
			OK      bool     `json:"ok"`
			Leading []string `json:"leading"`
		}{c.cfg.ID, ok, c.Leading()}
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}
