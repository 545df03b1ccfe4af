package faults

// Child processes: the test binary re-executed as an engine of its own
// (a target or an initiator), so that a test can SIGKILL a peer or run it
// inside a network namespace. The parent talks to a child with JSON lines:
// commands on the child's stdin, answers on its stdout behind childPrefix.
// A child exits when its stdin closes (its parent died) or when its
// lifetime runs out, so that no test leaves a process behind.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
)

const (
	childEnv    = "MORI_FAULTS_CHILD"
	childPrefix = "@@faults "
)

// childConfig is what a child is started with (JSON in childEnv).
type childConfig struct {
	Role      string `json:"role"` // "target" or "initiator"
	Key       string `json:"key"`
	Host      string `json:"host"`
	Secret    string `json:"secret,omitempty"`
	Mem       int    `json:"mem"`
	TimeoutMS int    `json:"timeout_ms"`
	StallMS   int    `json:"stall_ms"`
	DialMS    int    `json:"dial_ms"`
	ChunkSize int    `json:"chunk_size,omitempty"`
	// Port and DataPort fix the control-plane and TCP data ports (0: any
	// free one), so that a restarted child answers at the same address.
	Port      int `json:"port,omitempty"`
	DataPort  int `json:"data_port,omitempty"`
	LifetimeS int `json:"lifetime_s"`
}

// msg is a command or an answer.
type msg struct {
	Cmd    string   `json:"cmd,omitempty"`
	Engine []byte   `json:"engine,omitempty"`
	Mem    []byte   `json:"mem,omitempty"`
	N      int      `json:"n,omitempty"`
	Size   uint64   `json:"size,omitempty"`
	Off    uint64   `json:"off,omitempty"`
	Seed   uint64   `json:"seed,omitempty"`
	UID    uint64   `json:"uid,omitempty"`
	Peer   string   `json:"peer,omitempty"`
	Async  bool     `json:"async,omitempty"`
	OK     bool     `json:"ok,omitempty"`
	Found  bool     `json:"found,omitempty"`
	Code   int      `json:"code,omitempty"`
	Err    string   `json:"err,omitempty"`
	Result []result `json:"result,omitempty"`
	// SubmitMS is how long the Submit call itself took.
	SubmitMS float64 `json:"submit_ms,omitempty"`
}

// result is the outcome of one transfer run by an initiator child.
type result struct {
	Code core.StatusCode `json:"code"`
	MS   float64         `json:"ms"` // from submission to the terminal state
	Msg  string          `json:"msg,omitempty"`
}

// TestHelperProcess is the child: it does nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("helper process of the fault tests (runs only when they start it)")
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		childFatal("bad %s: %v", childEnv, err)
	}
	lifetime := time.Duration(max(cfg.LifetimeS, 10)) * time.Second
	time.AfterFunc(lifetime, func() {
		fmt.Fprintf(os.Stderr, "child %q: lifetime of %s over, exiting\n", cfg.Key, lifetime)
		os.Exit(3)
	})
	runChild(cfg)
	os.Exit(0)
}

func childFatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
	os.Exit(2)
}

var childOut sync.Mutex

func childSend(m msg) {
	b, err := json.Marshal(m)
	if err != nil {
		childFatal("encode: %v", err)
	}
	childOut.Lock()
	defer childOut.Unlock()
	os.Stdout.Write(append(append([]byte(childPrefix), b...), '\n'))
}

func runChild(cfg childConfig) {
	ecfg := stack.Config{Config: engine.Config{
		Key:              cfg.Key,
		Host:             cfg.Host,
		TransferTimeout:  time.Duration(cfg.TimeoutMS) * time.Millisecond,
		HandshakeTimeout: 5 * time.Second,
		Logger:           testLogger(),
	}, TCP: tcpConfig()}
	if cfg.Secret != "" {
		ecfg.Secret = []byte(cfg.Secret)
	}
	if cfg.StallMS > 0 {
		ecfg.TCP.StallTimeout = time.Duration(cfg.StallMS) * time.Millisecond
	}
	if cfg.DialMS > 0 {
		ecfg.TCP.DialTimeout = time.Duration(cfg.DialMS) * time.Millisecond
	}
	ecfg.TCP.ChunkSize = cfg.ChunkSize
	ecfg.Port, ecfg.TCP.Port = cfg.Port, cfg.DataPort
	e, err := startEngine(ecfg)
	if err != nil {
		childFatal("start engine: %v", err)
	}
	defer e.Close()
	buf, err := hostmem.Alloc(cfg.Mem)
	if err != nil {
		childFatal("%v", err)
	}
	md, err := e.RegisterMemory(buf.Addr(), uint64(buf.Len()), -1, core.LocationCPU)
	if err != nil {
		childFatal("register memory: %v", err)
	}
	ed := e.Desc()
	eb, err := ed.MarshalBinary()
	if err != nil {
		childFatal("%v", err)
	}
	mb, err := md.MarshalBinary()
	if err != nil {
		childFatal("%v", err)
	}
	childSend(msg{Cmd: "ready", Engine: eb, Mem: mb})

	var remote core.MemoryDesc
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m msg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			childFatal("bad command %q: %v", sc.Bytes(), err)
		}
		switch m.Cmd {
		case "quit":
			return
		case "register": // initiator: register the target and its memory
			var d core.EngineDesc
			err := d.UnmarshalBinary(m.Engine)
			if err == nil {
				err = remote.UnmarshalBinary(m.Mem)
			}
			if err == nil {
				err = e.RegisterRemoteEngine(d)
			}
			if err != nil {
				childSend(msg{Err: err.Error()})
				continue
			}
			childSend(msg{OK: true})
		case "write": // initiator: n writes of size bytes at i*size, pattern seed+i
			n, size := m.N, m.Size
			if uint64(n)*size > uint64(buf.Len()) || uint64(n)*size > remote.Size {
				childSend(msg{Err: "write: past the memory"})
				continue
			}
			dst := remote
			if len(m.Mem) > 0 { // a memory descriptor of the caller's choosing (a stale one)
				if err := dst.UnmarshalBinary(m.Mem); err != nil {
					childSend(msg{Err: err.Error()})
					continue
				}
			}
			reqs := make([]engine.Request, n)
			for i := range reqs {
				off := uint64(i) * size
				fillPattern(buf.Bytes()[off:off+size], m.Seed+uint64(i))
				reqs[i] = engine.Request{Local: md, Remote: dst, Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}}, UID: m.UID + uint64(i)}
			}
			start := time.Now()
			sts := e.Submit(core.OpWrite, reqs)
			submit := time.Since(start)
			if m.Async {
				childSend(msg{OK: true, SubmitMS: ms(submit)})
				continue
			}
			ends := watchEnds(sts)
			ends.wait(ecfg.TransferTimeout + 30*time.Second)
			res := make([]result, n)
			for i, at := range ends.times() {
				res[i] = result{Code: sts[i].Code(), Msg: sts[i].Message(), MS: -1}
				if !at.IsZero() {
					res[i].MS = ms(at.Sub(start))
				}
			}
			childSend(msg{OK: true, Result: res, SubmitMS: ms(submit)})
		case "check": // target: compare [off, off+size) with pattern seed
			if m.Off+m.Size > uint64(buf.Len()) {
				childSend(msg{Err: "check: past the memory"})
				continue
			}
			if err := checkPattern(buf.Bytes()[m.Off:m.Off+m.Size], m.Seed); err != nil {
				childSend(msg{Err: err.Error()})
				continue
			}
			childSend(msg{OK: true})
		case "poison": // target: fill [off, off+size) with the byte seed
			if m.Off+m.Size > uint64(buf.Len()) {
				childSend(msg{Err: "poison: past the memory"})
				continue
			}
			poison(buf.Bytes()[m.Off:m.Off+m.Size], byte(m.Seed))
			childSend(msg{OK: true})
		case "untouched": // target: is [off, off+size) still all the byte seed?
			if m.Off+m.Size > uint64(buf.Len()) {
				childSend(msg{Err: "untouched: past the memory"})
				continue
			}
			if i := firstNot(buf.Bytes()[m.Off:m.Off+m.Size], byte(m.Seed)); i >= 0 {
				childSend(msg{Err: fmt.Sprintf("byte %d of %d changed to %#x", i, m.Size, buf.Bytes()[m.Off+uint64(i)])})
				continue
			}
			childSend(msg{OK: true})
		case "inbound": // target: the inbound status of (peer, uid)
			st, ok := e.PopInboundTransferStatus(m.Peer, m.UID)
			childSend(msg{OK: true, Found: ok, Code: int(st.Code), Err: st.Message})
		default:
			childFatal("unknown command %q", m.Cmd)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// child is the parent's handle on a child process.
type child struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan msg
	mu    sync.Mutex
	log   bytes.Buffer // what the child wrote besides its answers
	exit  chan struct{}
	ready msg
}

// startChild starts the test binary as a child with cfg, behind the
// command prefix pre (for example "ip netns exec NS"), and waits for it to
// be ready. It is killed at the end of the test.
func startChild(t testing.TB, cfg childConfig, pre ...string) *child {
	t.Helper()
	if cfg.LifetimeS == 0 {
		cfg.LifetimeS = 120
	}
	if cfg.TimeoutMS == 0 {
		cfg.TimeoutMS = int(transferTimeout / time.Millisecond)
	}
	spec, err := json.Marshal(cfg)
	require.NoError(t, err)
	exe, err := os.Executable()
	require.NoError(t, err)
	argv := append(append([]string{}, pre...), exe, "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=5m")
	c := &child{t: t, name: cfg.Key, lines: make(chan msg, 64), exit: make(chan struct{})}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	stdout, err := c.cmd.StdoutPipe()
	require.NoError(t, err)
	c.cmd.Stderr = &lockedWriter{c: c}
	c.stdin, err = c.cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, c.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if rest, ok := bytes.CutPrefix(line, []byte(childPrefix)); ok {
				var m msg
				if err := json.Unmarshal(rest, &m); err == nil {
					c.lines <- m
					continue
				}
			}
			c.mu.Lock()
			c.log.Write(line)
			c.log.WriteByte('\n')
			c.mu.Unlock()
		}
		c.cmd.Wait()
		close(c.exit)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("child %q output:\n%s", c.name, c.output())
		}
	})
	c.ready = c.recv(30 * time.Second)
	require.Equal(t, "ready", c.ready.Cmd, "child %q did not start: %s", c.name, c.output())
	return c
}

type lockedWriter struct{ c *child }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.log.Write(p)
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// recv waits for the child's next answer, failing the test after timeout.
func (c *child) recv(timeout time.Duration) msg {
	c.t.Helper()
	select {
	case m := <-c.lines:
		return m
	case <-c.exit:
		select {
		case m := <-c.lines:
			return m
		default:
		}
		c.t.Fatalf("child %q exited (%v): %s", c.name, c.cmd.ProcessState, c.output())
	case <-time.After(timeout):
		c.t.Fatalf("child %q: no answer within %s: %s", c.name, timeout, c.output())
	}
	return msg{}
}

// call sends a command and waits for the answer.
func (c *child) call(m msg, timeout time.Duration) msg {
	c.t.Helper()
	b, err := json.Marshal(m)
	require.NoError(c.t, err)
	_, err = c.stdin.Write(append(b, '\n'))
	require.NoError(c.t, err, "child %q: %s", c.name, c.output())
	return c.recv(timeout)
}

// quit asks the child to close its engine and exit, and waits for it.
func (c *child) quit() {
	c.t.Helper()
	b, _ := json.Marshal(msg{Cmd: "quit"})
	c.stdin.Write(append(b, '\n'))
	select {
	case <-c.exit:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("child %q did not exit after quit: %s", c.name, c.output())
	}
}

// engineDesc and memDesc decode what the child published.
func (c *child) engineDesc() core.EngineDesc {
	var d core.EngineDesc
	require.NoError(c.t, d.UnmarshalBinary(c.ready.Engine))
	return d
}

func (c *child) memDesc() core.MemoryDesc {
	var d core.MemoryDesc
	require.NoError(c.t, d.UnmarshalBinary(c.ready.Mem))
	return d
}

// kill sends SIGKILL and waits (boundedly) for the process to be gone.
func (c *child) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
	}
	select {
	case <-c.exit:
	case <-time.After(10 * time.Second):
		c.t.Errorf("child %q still running 10 s after SIGKILL", c.name)
	}
}

const isolatedEnv = "MORI_FAULTS_ISOLATED"

// isolated re-runs the calling test alone in a child process and reports
// its outcome, so that a crash of the engine (a panic in one of its
// goroutines kills the process) fails that test only, with its trace,
// instead of taking the whole package down. It returns true in the child,
// where the test body must run, and false in the parent, which must return.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv(isolatedEnv) == t.Name() {
		return true
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), isolatedEnv+"="+t.Name())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(3*time.Minute + 10*time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("isolated run of %s did not end: %s", t.Name(), out.String())
	}
	for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
		if bytes.Contains(line, []byte(".go:")) && !bytes.HasPrefix(bytes.TrimSpace(line), []byte("---")) {
			t.Logf("(isolated) %s", bytes.TrimSpace(line))
		}
	}
	if err != nil {
		t.Fatalf("isolated run of %s failed (%v):\n%s", t.Name(), err, out.String())
	}
	return false
}
