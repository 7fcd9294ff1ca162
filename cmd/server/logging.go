package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"

	"casearchiver/handlers"
)

// newLogger builds the one logger of the process: JSON with Cloud Logging keys (severity, message,
// logging.googleapis.com/trace) on Cloud Run, tint on a terminal.
func newLogger(w io.Writer, format string, level slog.Level, project string) *slog.Logger {
	var h slog.Handler
	if format == "text" {
		h = tint.NewTextHandler(w, &tint.Options{Level: level, NoColor: !isTerminal(w)})
	} else {
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: cloudLoggingKeys})
	}
	return slog.New(handlers.NewLogHandler(h, project))
}

func cloudLoggingKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.LevelKey:
		a.Key = "severity"
		switch lv := a.Value.Any().(slog.Level); {
		case lv >= slog.LevelError:
			a.Value = slog.StringValue("ERROR")
		case lv >= slog.LevelWarn:
			a.Value = slog.StringValue("WARNING")
		case lv >= slog.LevelInfo:
			a.Value = slog.StringValue("INFO")
		default:
			a.Value = slog.StringValue("DEBUG")
		}
	case slog.MessageKey:
		a.Key = "message"
	}
	return a
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
