package rdma

import (
	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// Factory is the production RDMA factory: verbs through the host's
// libibverbs, loaded at run time. Where libibverbs cannot be loaded or no
// port is active it returns an error wrapping ErrNotSupported, and an
// engine in auto mode falls back to TCP.
func Factory(env core.BackendEnv, cfg any) (core.Backend, error) {
	return NewFactory(verbs.System(), Options{})(env, cfg)
}

// NewFactory returns a constructor of RDMA backends over provider p
// (System, or a simulated host from package sim), of the shape an engine
// takes (engine.Factory). The configuration given at creation is an
// Config, a *Config or nil (the defaults).
func NewFactory(p verbs.Provider, o Options) func(core.BackendEnv, any) (core.Backend, error) {
	return func(env core.BackendEnv, cfg any) (core.Backend, error) {
		var rc Config
		switch v := cfg.(type) {
		case nil:
		case Config:
			rc = v
		case *Config:
			rc = *v
		default:
			return nil, core.Errorf(core.ErrInvalidArgs, "RDMA backend: configuration of type %T, want verbs.Config", cfg)
		}
		s, err := newSettings(rc, o)
		if err != nil {
			return nil, err
		}
		return newBackend(p, env, s)
	}
}
