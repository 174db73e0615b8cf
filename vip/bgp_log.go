package vip

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// goBGPLogger passes gobgp's log lines to a *slog.Logger. gobgp's Fatal
// and Panic are logged at error level; Panic then panics, as gobgp
// expects, and Fatal returns (only gobgp's gRPC server, which the
// announcer does not start, calls it).
type goBGPLogger struct {
	log   *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel; set by gobgp's SetLogLevel
}

func newGoBGPLogger(l *slog.Logger) *goBGPLogger {
	g := &goBGPLogger{log: l}
	lvl := gobgplog.InfoLevel
	if l.Enabled(context.Background(), slog.LevelDebug) {
		lvl = gobgplog.DebugLevel
	}
	g.level.Store(uint32(lvl))
	return g
}

func (g *goBGPLogger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	ctx := context.Background()
	if !g.log.Enabled(ctx, level) {
		return
	}
	args := make([]any, 0, 2*len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		args = append(args, k, fields[k])
	}
	g.log.Log(ctx, level, msg, args...)
}

func (g *goBGPLogger) Panic(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

func (g *goBGPLogger) Fatal(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelError, "fatal: "+msg, fields)
}

func (g *goBGPLogger) Error(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelError, msg, fields)
}

func (g *goBGPLogger) Warn(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelWarn, msg, fields)
}

func (g *goBGPLogger) Info(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelInfo, msg, fields)
}

func (g *goBGPLogger) Debug(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelDebug, msg, fields)
}

func (g *goBGPLogger) SetLevel(level gobgplog.LogLevel) { g.level.Store(uint32(level)) }

// GetLevel gates gobgp's expensive debug lines.
func (g *goBGPLogger) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(g.level.Load()) }
