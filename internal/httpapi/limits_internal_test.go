package httpapi

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientKey(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.7:4711":                    "192.0.2.7",
		"[::ffff:192.0.2.7]:4711":           "192.0.2.7", // IPv4 over an IPv6 socket
		"[2001:db8:1:2:aaaa:bbbb:cccc:1]:1": "2001:db8:1:2::",
		"[2001:db8:1:2::99]:1":              "2001:db8:1:2::", // the same /64
		"[2001:db8:1:3::1]:1":               "2001:db8:1:3::",
		"pipe":                              "invalid IP",
	} {
		if got := clientKey(clientAddr(&http.Request{RemoteAddr: remote}, nil)).String(); got != want {
			t.Errorf("clientKey(%s) = %s; want %s", remote, got, want)
		}
	}
}

func TestClientLimiter(t *testing.T) {
	l := newClientLimiter(2)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !l.acquire(a) || !l.acquire(a) {
		t.Fatal("refused a client under its limit")
	}
	if l.acquire(a) {
		t.Error("a third slot for a client limited to 2")
	}
	if !l.acquire(b) {
		t.Error("another client refused because of the first")
	}
	l.release(a)
	if !l.acquire(a) {
		t.Error("a released slot was not given back")
	}
	l.release(a)
	l.release(a)
	l.release(b)
	if len(l.inFlight) != 0 {
		t.Errorf("entries left once every slot is released: %v", l.inFlight)
	}
}
