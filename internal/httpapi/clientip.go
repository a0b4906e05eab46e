package httpapi

import (
	"net/http"
	"net/netip"
	"strings"
)

// Who the client of a request is.
//
// Without trusted proxies (Config.TrustedProxies, TRUSTED_PROXIES) the
// client is the connection's peer and X-Forwarded-For is never read: any
// client may send one. Behind reverse proxies the peer is a proxy, so
// X-Forwarded-For is read, but only when the peer is a trusted proxy, and
// only as far as trusted proxies wrote it. That is the behaviour of
// nginx's real_ip module with real_ip_recursive on, and of Caddy's
// trusted_proxies with trusted_proxies_strict:
//
//   - The header's lines are one list, in order (RFC 9110 5.3), each
//     element an IP address, optionally with a port ("192.0.2.7:4711",
//     "[2001:db8::7]:4711").
//   - From the peer, the list is walked from right to left: each proxy
//     appends the address it received the request from, so the right-most
//     element was written by the peer, the next by the proxy before it,
//     and so on. The walk goes on while the address reached is a trusted
//     proxy; the first untrusted address is the client. Elements to its
//     left came from the client itself and are never looked at: a client
//     may prepend whatever it likes ("spoofed, real, proxy" gives "real").
//   - A malformed element (not an address, "unknown", empty, or with a
//     zone) stops the walk: the client is the last address reached, a
//     trusted proxy (the peer when it is the right-most element). What
//     lies beyond cannot be told apart from forged input, so it is not
//     believed, and such requests count against the proxy, never against
//     an address a client chose.
//   - When every element is a trusted proxy, the left-most one is the
//     client (a request from inside the proxies' own network).
//
// The client address is used wherever the API names or counts a client:
// the per-client upload cap (clientKey), the per-IP rate limits of the
// auth endpoints (byIP), and the client_ip of audit rows, outbox events
// and refresh tokens (origin). IPv4-mapped IPv6 addresses are unmapped
// first, so an IPv4 prefix matches them.

// clientAddr returns the address of the client that sent r, given the
// prefixes of the trusted proxies (none: the peer, whatever the headers
// say). It returns the zero Addr when the peer is not an IP address (not
// TCP).
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr
	}
	lines := r.Header.Values("X-Forwarded-For")
	for i := len(lines) - 1; i >= 0; i-- {
		rest := lines[i]
		for {
			elem := rest
			j := strings.LastIndexByte(rest, ',')
			if j >= 0 {
				elem, rest = rest[j+1:], rest[:j]
			}
			next, ok := parseForwardedAddr(elem)
			if !ok {
				return addr // the last trusted hop
			}
			addr = next
			if !isTrusted(addr, trusted) {
				return addr
			}
			if j < 0 {
				break
			}
		}
	}
	return addr // every hop trusted: the left-most
}

// isTrusted reports whether addr is in one of the prefixes.
func isTrusted(addr netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// parseForwardedAddr parses an element of X-Forwarded-For: an IP address,
// optionally with a port, and for IPv6 optionally in brackets; white space
// around it is ignored. A zoned address is refused: a zone means nothing
// beyond the host that wrote it.
func parseForwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	addr, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			addr, err = ap.Addr(), nil
		} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			addr, err = netip.ParseAddr(s[1 : len(s)-1])
			if err == nil && !addr.Is6() {
				return netip.Addr{}, false
			}
		}
	}
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}

// clientAddr is the address of r's client (see above).
func (s *server) clientAddr(r *http.Request) netip.Addr {
	return clientAddr(r, s.Config.TrustedProxies)
}
