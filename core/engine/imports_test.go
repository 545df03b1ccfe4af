package engine_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The import rules of ARCHITECTURE.md: the engine imports no data plane,
// and no data plane imports the engine.
func TestImportRules(t *testing.T) {
	const mod = "github.com/mori-go/mori-go/"
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "../../...").CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, ": ")
		if strings.HasPrefix(pkg, mod) {
			imports[strings.TrimPrefix(pkg, mod)] = strings.Fields(deps)
		}
	}
	require.Contains(t, imports, "core/engine")
	dataPlane := func(p string) bool {
		return strings.HasPrefix(p, "transport/") || p == "verbs" || strings.HasPrefix(p, "verbs/")
	}
	for pkg, deps := range imports {
		for _, d := range deps {
			d, ok := strings.CutPrefix(d, mod)
			if !ok {
				continue
			}
			if strings.HasPrefix(pkg, "core") && dataPlane(d) {
				t.Errorf("%s imports data plane %s: backends are handed to the engine (package stack)", pkg, d)
			}
			if dataPlane(pkg) && d == "core/engine" {
				t.Errorf("data plane %s imports core/engine", pkg)
			}
			if strings.HasPrefix(pkg, "core") && d == "stack" {
				t.Errorf("%s imports stack, which assembles it", pkg)
			}
		}
	}
}
