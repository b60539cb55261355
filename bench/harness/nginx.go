package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// nginxConf is the reference proxy: plain proxy_pass with a keep-alive pool
// to the upstream, the setup the issue compares Tollgate against.
// worker_processes auto gives nginx one worker per core, as `workers: auto`
// in bench/tollgate-bench.yaml gives Tollgate one worker process of one P
// per core (the report says which; TOLLGATE_WORKERS and TOLLGATE_PROCS
// change it). keepalive_requests is raised on
// both sides because nginx's default (1000) would close connections mid-run
// and Tollgate has no such limit.
const nginxConf = `daemon off;
master_process on;
worker_processes auto;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy_temp;
    fastcgi_temp_path {{dir}}/fastcgi_temp;
    uwsgi_temp_path {{dir}}/uwsgi_temp;
    scgi_temp_path {{dir}}/scgi_temp;
    keepalive_requests 10000000;
    keepalive_timeout 65s;
    upstream bench_upstream {
        server {{upstream}};
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen {{listen}};
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
}
`

// startNginx runs nginx in the foreground with a generated configuration in
// dir, or returns "" and no error when nginx is not installed.
func startNginx(ctx context.Context, dir, upstream string, ownSession bool) (*proc, string, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
		if bin == "" {
			return nil, "", nil
		}
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return nil, "", fmt.Errorf("nginx dir: %w", err)
	}
	conf := strings.NewReplacer("{{dir}}", ndir, "{{upstream}}", upstream, "{{listen}}", listen).Replace(nginxConf)
	confPath := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, "", fmt.Errorf("nginx conf: %w", err)
	}
	// -e keeps nginx from opening /var/log/nginx/error.log before it reads
	// the configuration (unwritable for non-root users).
	p, err := startProc(dir, "nginx", ownSession, nil, bin, "-p", ndir, "-c", confPath, "-e", filepath.Join(ndir, "nginx-error.log"))
	if err != nil {
		return nil, "", err
	}
	if err := waitHTTP(ctx, p, "http://"+listen+"/healthz"); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("nginx: %w (%s)", err, readTail(filepath.Join(ndir, "nginx-error.log")))
	}
	return p, listen, nil
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 1000 {
		b = b[len(b)-1000:]
	}
	return strings.TrimSpace(string(b))
}
