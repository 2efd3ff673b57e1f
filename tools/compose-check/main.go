// Command compose-check loads a compose file with the Compose loader itself
// (github.com/compose-spec/compose-go/v2, the library `docker compose` is built on) and
// fails when `docker compose up` would start something other than what the file means.
//
// For the default services and for each profile the file declares (or the ones named with
// -profile), it reports, one line per fault, and exits 1 when there is any:
//
//   - the file does not load (YAML error, unknown key, bad interpolation, a service that
//     depends on one that is not enabled, ...): the loader's own error;
//   - a file it names is missing: a bind-mount source, a top-level config or secret file,
//     a required env_file;
//   - a `--config` / `--config=` argument in a service's command names a container path
//     that no bind mount or config provides (the contrib image would run its own default
//     config there, silently);
//   - a service sets an environment variable that no file mounted into it reads.
//
// What a service's configuration reads: the files bind-mounted into it (and its configs),
// the OpenTelemetry Collector / Jaeger v2 way, `${env:NAME}` or `${env:NAME:-default}`.
// Whole-line `#` comments do not count. A service that mounts no file reads no variable,
// so every variable it sets is reported. When a file mounted into a service is missing,
// only that is reported for the service (what it would read is unknown).
//
// Usage:
//
//	compose-check [-f docker-compose.yml] [-profile NAME]...
//
// Exit status: 0 when every check passed, 1 when one failed, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

type profiles []string

func (p *profiles) String() string     { return strings.Join(*p, ",") }
func (p *profiles) Set(v string) error { *p = append(*p, v); return nil }

// envRef matches a collector-style reference to an environment variable.
var envRef = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}`)

func main() {
	file := flag.String("f", "docker-compose.yml", "the compose file")
	var only profiles
	flag.Var(&only, "profile", "a profile to check besides the default services (repeatable; default: every profile the file declares)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "compose-check: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	ctx := context.Background()

	var faults []string
	report := func(scope, format string, args ...any) {
		faults = append(faults, fmt.Sprintf("compose-check: %s: %s: %s", *file, scope, fmt.Sprintf(format, args...)))
	}

	// Which profiles there are: load once with every service enabled.
	all, err := load(ctx, *file, []string{"*"})
	if err != nil {
		report("load", "%v", err)
		finish(faults)
	}
	checks := [][]string{nil}
	if len(only) > 0 {
		for _, p := range only {
			checks = append(checks, []string{p})
		}
	} else {
		for _, p := range declaredProfiles(all) {
			checks = append(checks, []string{p})
		}
	}
	for _, prof := range checks {
		scope := "default services"
		if prof != nil {
			scope = "profile " + prof[0]
		}
		project, err := load(ctx, *file, prof)
		if err != nil {
			report(scope, "does not load: %v", err)
			continue
		}
		if len(project.Services) == 0 {
			report(scope, "enables no service")
			continue
		}
		for _, f := range checkProject(project) {
			report(scope, "%s", f)
		}
	}
	finish(faults)
}

func finish(faults []string) {
	// The same fault seen from two profiles is reported once.
	seen := map[string]bool{}
	for _, f := range faults {
		if !seen[f] {
			seen[f] = true
			fmt.Fprintln(os.Stderr, f)
		}
	}
	if len(faults) > 0 {
		os.Exit(1)
	}
	fmt.Println("compose-check: ok")
	os.Exit(0)
}

func load(ctx context.Context, file string, prof []string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithProfiles(prof),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return nil, err
	}
	return cli.ProjectFromOptions(ctx, opts)
}

func declaredProfiles(p *types.Project) []string {
	set := map[string]bool{}
	for _, s := range p.AllServices() {
		for _, name := range s.Profiles {
			set[name] = true
		}
	}
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// checkProject returns the faults of the enabled services of p, service by service.
func checkProject(p *types.Project) []string {
	var faults []string
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		for _, f := range checkService(p, s) {
			faults = append(faults, fmt.Sprintf("service %s: %s", name, f))
		}
	}
	return faults
}

func checkService(p *types.Project, s types.ServiceConfig) []string {
	var faults []string
	mounted := map[string]bool{} // container paths a file is mounted on
	var read []string            // host files the service's configuration is in
	missing := false             // a mounted file is missing: what it reads is unknown

	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		info, err := os.Stat(v.Source)
		if err != nil {
			faults = append(faults, fmt.Sprintf("bind mount %s -> %s: source %s", rel(p, v.Source), v.Target, statFault(err)))
			missing = true
			continue
		}
		mounted[v.Target] = true
		if info.Mode().IsRegular() {
			read = append(read, v.Source)
		}
	}
	for _, ref := range s.Configs {
		cfg, ok := p.Configs[ref.Source]
		if !ok || cfg.File == "" {
			continue
		}
		target := ref.Target
		if target == "" {
			target = "/" + ref.Source
		}
		if _, err := os.Stat(cfg.File); err != nil {
			faults = append(faults, fmt.Sprintf("config %s: file %s %s", ref.Source, rel(p, cfg.File), statFault(err)))
			missing = true
			continue
		}
		mounted[target] = true
		read = append(read, cfg.File)
	}
	for _, ref := range s.Secrets {
		sec, ok := p.Secrets[ref.Source]
		if !ok || sec.File == "" {
			continue
		}
		if _, err := os.Stat(sec.File); err != nil {
			faults = append(faults, fmt.Sprintf("secret %s: file %s %s", ref.Source, rel(p, sec.File), statFault(err)))
		}
	}
	for _, ef := range s.EnvFiles {
		if _, err := os.Stat(ef.Path); err != nil && bool(ef.Required) {
			faults = append(faults, fmt.Sprintf("env_file %s %s", rel(p, ef.Path), statFault(err)))
		}
	}

	for _, path := range configArgs(s.Command) {
		if !mounted[path] && !missing {
			faults = append(faults, fmt.Sprintf("command runs --config %s, but no bind mount or config provides that path", path))
		}
	}

	if missing {
		return faults
	}
	reads := map[string]bool{}
	for _, f := range read {
		data, err := os.ReadFile(f)
		if err != nil {
			faults = append(faults, fmt.Sprintf("cannot read %s: %v", f, err))
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			for _, m := range envRef.FindAllStringSubmatch(line, -1) {
				reads[m[1]] = true
			}
		}
	}
	names := make([]string, 0, len(s.Environment))
	for name := range s.Environment {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if reads[name] {
			continue
		}
		if len(read) == 0 {
			faults = append(faults, fmt.Sprintf("sets %s, but mounts no config file that could read it", name))
		} else {
			faults = append(faults, fmt.Sprintf("sets %s, which its config (%s) never reads as ${env:%s}", name, relAll(p, read), name))
		}
	}
	return faults
}

// configArgs returns the values of the --config options of a command.
func configArgs(cmd types.ShellCommand) []string {
	var out []string
	for i, arg := range cmd {
		switch {
		case strings.HasPrefix(arg, "--config="):
			out = append(out, strings.TrimPrefix(arg, "--config="))
		case arg == "--config" && i+1 < len(cmd):
			out = append(out, cmd[i+1])
		}
	}
	// Only container paths: --config also takes inline "yaml:..." and env: URIs.
	paths := out[:0]
	for _, v := range out {
		if strings.HasPrefix(v, "/") {
			paths = append(paths, v)
		}
	}
	return paths
}

func statFault(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "is missing"
	}
	return "cannot be read: " + err.Error()
}

// rel names a host file relative to the compose file's directory, as the file names it.
func rel(p *types.Project, file string) string {
	if r, err := filepath.Rel(p.WorkingDir, file); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return file
}

func relAll(p *types.Project, files []string) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = rel(p, f)
	}
	return strings.Join(names, ", ")
}
