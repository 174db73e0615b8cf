package proxy

import (
	"fmt"
	"net/http"
)

// errorPages are the canned responses the proxy itself produces, built once.
var errorPages = func() map[int][]byte {
	why := map[int]string{
		400: "Your browser sent an invalid request.",
		408: "Your browser didn't send a complete request in time.",
		414: "The request line is too long.",
		431: "The request header fields are too large.",
		501: "The requested transfer coding is not implemented.",
		502: "The server returned an invalid or incomplete response.",
		503: "No server is available to handle this request.",
		504: "The server didn't respond in time.",
		505: "The HTTP version is not supported.",
	}
	m := make(map[int][]byte, len(why))
	for code, msg := range why {
		text := http.StatusText(code)
		body := fmt.Sprintf("<html><body><h1>%d %s</h1>\n%s\n</body></html>\n", code, text, msg)
		m[code] = fmt.Appendf(nil, "HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncache-control: no-cache\r\n"+
			"content-type: text/html\r\nconnection: close\r\n\r\n%s", code, text, len(body), body)
	}
	return m
}()

// writeError answers an error page; the connection is closed afterwards.
func (cn *conn) writeError(status int) {
	page, ok := errorPages[status]
	if !ok {
		page = errorPages[400]
	}
	cn.c.Write(page)
}
