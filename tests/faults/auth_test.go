package faults

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

// TestSharedSecretEnginesTalk: engines that share a secret register with
// each other and move bytes both ways.
func TestSharedSecretEnginesTalk(t *testing.T) {
	v := newEnv(t)
	a := v.engine("prefill", withSecret("team-secret"))
	b := v.engine("decode", withSecret("team-secret"))
	link(t, a, b)
	const size = 8 << 20
	src, dst, back := v.alloc(size), v.alloc(size), v.alloc(size)
	fillPattern(src.Bytes(), 3)
	sd, dd, bd := register(t, a, src), register(t, b, dst), register(t, a, back)
	requireSuccess(t, write(a, sd, dd, 0, 0, size), "write with a shared secret")
	require.NoError(t, checkPattern(dst.Bytes(), 3))
	requireSuccess(t, read(a, bd, dd, 0, 0, size), "read with a shared secret")
	require.NoError(t, checkPattern(back.Bytes(), 3))
}

// secretCases are the mismatches: the target's secret, the intruder's.
var secretCases = []struct{ name, target, intruder string }{
	{"wrong secret", "team-secret", "guessed"},
	{"missing secret", "team-secret", ""},
	{"secret offered to an engine without one", "", "team-secret"},
}

// TestControlPlaneRefusesWrongSecret: an engine with a wrong or missing
// secret cannot register with the target: RegisterRemoteEngine fails with
// "authentication failed", the target's memory and inbound table are
// untouched, the intruder cannot submit anything, and the target still
// serves its real peer.
func TestControlPlaneRefusesWrongSecret(t *testing.T) {
	for _, c := range secretCases {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t)
			a := v.engine("prefill", withSecret(c.target))
			b := v.engine("decode", withSecret(c.target))
			link(t, a, b)
			m := v.engine("mallory", withSecret(c.intruder))
			const size = 1 << 20
			dst, msrc := v.alloc(size), v.alloc(size)
			poison(dst.Bytes(), 0xC3)
			dd, msd := register(t, b, dst), register(t, m, msrc)
			start := time.Now()
			err := m.RegisterRemoteEngine(b.Desc())
			took := time.Since(start)
			require.ErrorContains(t, err, "authentication failed")
			st := m.Submit(core.OpWrite, []engine.Request{{Local: msd, Remote: dd, Ranges: []core.Range{{Size: 16}}, UID: 1}})
			require.Equal(t, core.ErrNotFound, st[0].Wait(5*time.Second), st[0].Message())
			require.Equal(t, -1, firstNot(dst.Bytes(), 0xC3), "target memory changed")
			require.Zero(t, b.Inbound().Len(), "the intruder reached the inbound table")
			src := v.alloc(size)
			requireSuccess(t, write(a, register(t, a, src), dd, 0, 0, size), "the real peer after the refusal")
			t.Logf("control plane refused in %s: %v", took.Round(time.Microsecond), err)
		})
	}
}

// TestDataPlaneRefusesWrongSecret: the intruder gets past the control plane
// with the help of an accomplice that answers under the target's key (a
// forged descriptor: the accomplice's control port, the target's data
// port). The target's data port still refuses the intruder's streams before
// any frame is read: RegisterRemoteEngine fails with the data plane's
// "authentication failed", and the target's memory is untouched.
func TestDataPlaneRefusesWrongSecret(t *testing.T) {
	for _, c := range secretCases {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t)
			b := v.engine("decode", withSecret(c.target))
			accomplice := v.engine("decode", withSecret(c.intruder))
			m := v.engine("mallory", withSecret(c.intruder))
			const size = 1 << 20
			dst := v.alloc(size)
			poison(dst.Bytes(), 0xC3)
			dd := register(t, b, dst)
			forged := accomplice.Desc()
			forged.Backends = b.Desc().Backends // the real target's data port
			err := m.RegisterRemoteEngine(forged)
			require.Error(t, err)
			require.Contains(t, err.Error(), "authentication")
			require.Contains(t, err.Error(), "peer refused the connection", "refused by the data plane")
			msrc := v.alloc(size)
			st := m.Submit(core.OpWrite, []engine.Request{{Local: register(t, m, msrc), Remote: dd, Ranges: []core.Range{{Size: 16}}, UID: 1}})
			require.True(t, st[0].Wait(5*time.Second).Failed())
			require.Equal(t, -1, firstNot(dst.Bytes(), 0xC3), "target memory changed")
			require.Zero(t, b.Inbound().Len())
			t.Logf("data plane refused: %v", err)
		})
	}
}

// TestSecretRotationNeedsReRegistration: an engine started with another
// secret under a known key cannot reach the target, while the engine
// registered with the old secret keeps working (the secret is checked per
// connection, at its handshake, and per control-plane message).
func TestSecretRotationNeedsReRegistration(t *testing.T) {
	v := newEnv(t)
	a := v.engine("prefill", withSecret("old"))
	b := v.engine("decode", withSecret("old"))
	link(t, a, b)
	src, dst := v.alloc(4096), v.alloc(4096)
	fillPattern(src.Bytes(), 9)
	sd, dd := register(t, a, src), register(t, b, dst)
	requireSuccess(t, write(a, sd, dd, 0, 0, 4096), "before")
	a2 := v.engine("prefill", withSecret("new"))
	err := a2.RegisterRemoteEngine(b.Desc())
	require.ErrorContains(t, err, "authentication failed")
	require.True(t, bytes.Equal(src.Bytes(), dst.Bytes()))
	requireSuccess(t, write(a, sd, dd, 0, 0, 4096), "the engine with the old secret still works")
}
