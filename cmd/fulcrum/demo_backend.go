package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) demoBackendCmd() *cobra.Command {
	var listen, name string
	cmd := &cobra.Command{
		Use:   "demo-backend --listen ADDR --name NAME",
		Short: "Serve a tiny backend that answers every request with its name",
		Long: "Serve HTTP on ADDR, answering every request with NAME and a newline (200, text/plain),\n" +
			"and GET /healthz with ok. For demos and tests; stops on SIGTERM or SIGINT.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listen == "" {
				return errors.New("demo-backend: --listen ADDR is required")
			}
			if name == "" {
				name = listen
			}
			return c.runDemoBackend(cmd.Context(), listen, name)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on (host:port)")
	cmd.Flags().StringVar(&name, "name", "", "name to answer with (default: the listen address)")
	return cmd
}

func (c *cli) runDemoBackend(ctx context.Context, listen, name string) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           demoHandler(name),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	fmt.Fprintf(c.stderr, "demo-backend %s listening on %s\n", name, ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	return err
}

// demoHandler answers NAME\n to everything but GET /healthz. It logs
// nothing per request.
func demoHandler(name string) http.Handler {
	body := []byte(name + "\n")
	ok := []byte("ok")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			h.Set("Content-Length", "2")
			w.Write(ok)
			return
		}
		h.Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	})
}
