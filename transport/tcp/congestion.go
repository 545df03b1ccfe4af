package tcp

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
)

// TCP congestion control of the data streams (Config.Congestion). Empty
// leaves each socket with the system's choice. Hosts that default to bbr
// pace every stream with a kernel timer per burst, at the bandwidth bbr
// estimates; on loopback and fast data-center links it estimates far
// below the link, and transfers of megabytes took up to twice as long as
// with cubic on the machines measured, each timer an interrupt through
// the hypervisor there (docs/benchmarks.md, Small transfers).

// checkCongestion tries name on a throwaway socket, so that a name the
// kernel lacks or does not allow this process fails New, with the
// kernel's lists in the message, rather than every stream later.
func checkCongestion(name string) error {
	if name == "" {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return core.Errorf(core.ErrInvalidArgs, "tcp congestion control %q: no socket to try it on: %v", name, err)
	}
	defer unix.Close(fd)
	return congestionErr(name, unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name))
}

// congestionErr explains a failed TCP_CONGESTION for name (nil stays nil).
func congestionErr(name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOENT):
		return core.Errorf(core.ErrInvalidArgs, "tcp congestion control %q is not in this kernel (available: %s)",
			name, sysctlList("tcp_available_congestion_control"))
	case errors.Is(err, syscall.EPERM):
		return core.Errorf(core.ErrInvalidArgs, "tcp congestion control %q is not allowed for this process "+
			"(allowed: %s; net.ipv4.tcp_allowed_congestion_control, or CAP_NET_ADMIN, lets it use another)",
			name, sysctlList("tcp_allowed_congestion_control"))
	}
	return core.Errorf(core.ErrInvalidArgs, "tcp congestion control %q: %v", name, err)
}

// sysctlList reads one of the kernel's congestion control lists, for an
// error message.
func sysctlList(name string) string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// setCongestion sets the congestion control of c's socket to name; ""
// leaves it.
func setCongestion(c *net.TCPConn, name string) error {
	if name == "" {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	return congestionErr(name, serr)
}

// congestionOf reads the congestion control of c's socket.
func congestionOf(c *net.TCPConn) (string, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var name string
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		name, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	}); err != nil {
		return "", err
	}
	return strings.TrimRight(name, "\x00"), gerr
}
