package httpapi

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	proxies := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8:ff::/48"),
		netip.MustParsePrefix("192.0.2.1/32"),
	}
	for _, c := range []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     []string // X-Forwarded-For lines (nil: no header)
		want    string
	}{
		// No trusted proxy: the peer, whatever the header says.
		{"no proxies, no header", nil, "203.0.113.5:1234", nil, "203.0.113.5"},
		{"no proxies, spoofed header", nil, "203.0.113.5:1234", []string{"198.51.100.1"}, "203.0.113.5"},
		{"untrusted peer, spoofed header", proxies, "203.0.113.5:1234", []string{"198.51.100.1"}, "203.0.113.5"},
		{"untrusted peer claiming a proxy", proxies, "203.0.113.5:1", []string{"198.51.100.1, 10.0.0.1"}, "203.0.113.5"},
		{"IPv4-mapped peer", nil, "[::ffff:203.0.113.5]:1", nil, "203.0.113.5"},
		{"not TCP", proxies, "@", []string{"198.51.100.1"}, "invalid IP"},

		// A trusted peer: the right-most untrusted element.
		{"one proxy", loopback, "127.0.0.1:5555", []string{"198.51.100.1"}, "198.51.100.1"},
		{"spoofed, real, proxy", proxies, "10.0.0.2:1", []string{"6.6.6.6, 198.51.100.1, 10.0.0.1"}, "198.51.100.1"},
		{"chain over header lines", proxies, "10.0.0.2:1", []string{"6.6.6.6, 198.51.100.1", "10.0.0.3", "10.0.0.1"}, "198.51.100.1"},
		{"client's own line is not read", proxies, "10.0.0.2:1", []string{"6.6.6.6", "198.51.100.1"}, "198.51.100.1"},
		{"no spaces", proxies, "10.0.0.2:1", []string{"6.6.6.6,198.51.100.1,10.0.0.1"}, "198.51.100.1"},
		{"IPv6 client", proxies, "[2001:db8:ff::1]:443", []string{"2001:db8:1:2::7"}, "2001:db8:1:2::7"},
		{"IPv6 client with port", proxies, "[2001:db8:ff::1]:443", []string{"[2001:db8:1:2::7]:4711"}, "2001:db8:1:2::7"},
		{"IPv6 client in brackets", proxies, "[2001:db8:ff::1]:443", []string{"[2001:db8:1:2::7]"}, "2001:db8:1:2::7"},
		{"IPv4 client with port", proxies, "10.0.0.1:1", []string{"198.51.100.1:4711"}, "198.51.100.1"},
		{"IPv4-mapped client", proxies, "10.0.0.1:1", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"IPv4-mapped proxy", proxies, "[::ffff:10.0.0.1]:1", []string{"198.51.100.1"}, "198.51.100.1"},

		// Missing header or every hop trusted.
		{"trusted peer, no header", proxies, "10.0.0.1:1", nil, "10.0.0.1"},
		{"every hop trusted: left-most", proxies, "10.0.0.1:1", []string{"10.0.0.7, 192.0.2.1"}, "10.0.0.7"},

		// Malformed elements stop the walk at the last trusted hop.
		{"garbage", proxies, "10.0.0.1:1", []string{"not-an-ip"}, "10.0.0.1"},
		{"unknown", proxies, "10.0.0.1:1", []string{"unknown"}, "10.0.0.1"},
		{"empty header", proxies, "10.0.0.1:1", []string{""}, "10.0.0.1"},
		{"empty element", proxies, "10.0.0.1:1", []string{"198.51.100.1, "}, "10.0.0.1"},
		{"zone", proxies, "10.0.0.1:1", []string{"fe80::1%eth0"}, "10.0.0.1"},
		{"bracketed IPv4", proxies, "10.0.0.1:1", []string{"[198.51.100.1]"}, "10.0.0.1"},
		{"prefix", proxies, "10.0.0.1:1", []string{"198.51.100.0/24"}, "10.0.0.1"},
		{"malformed past a trusted hop", proxies, "10.0.0.1:1", []string{"198.51.100.1, bogus, 10.0.0.9"}, "10.0.0.9"},
		{"malformed left of the client", proxies, "10.0.0.1:1", []string{"bogus, 198.51.100.1"}, "198.51.100.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.remote, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, c.trusted).String(); got != c.want {
				t.Errorf("clientAddr(%s, X-Forwarded-For %q) = %s; want %s", c.remote, c.xff, got, c.want)
			}
		})
	}
}
