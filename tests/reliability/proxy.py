"""A real nginx (the Debian package) running a loopback copy of deploy/nginx.conf."""

import http.client
import os
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import time

from conftest import ROOT, free_port, missing_component

from gateway.nginx_allow import snippet

SITE = os.path.join(ROOT, "deploy", "nginx.conf")
INSTALL = "apt-get install nginx-light"


def nginx_binary():
    """The nginx executable; under CI a missing one fails the test instead of skipping it."""
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if path is None:
        missing_component(f"nginx is not installed: {INSTALL} (.ci/run does this)")
    return path


def self_signed_cert(directory):
    """A one-day certificate for 127.0.0.1, made now; returns (cert, key) paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "1", "-keyout", key, "-out", cert,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60)
    return cert, key


def loopback_site(text, https_port, http_port, upstream_socket, cert, key, directory):
    """deploy/nginx.conf with loopback ports, our certificate, socket, log and allow list;
    every edit must apply."""
    edits = [
        (r"listen \[::\]:\d+[^;]*;\n", ""),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 443 ", f"listen 127.0.0.1:{https_port} "),
        (r"server_name pay\.example\.ru;", "server_name 127.0.0.1;"),
        (r"https://pay\.example\.ru\$request_uri", f"https://127.0.0.1:{https_port}$request_uri"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};"),
        (r"server unix:/run/dem-gateway/gateway\.sock;", f"server unix:{upstream_socket};"),
        (r"access_log /var/log/nginx/dem-gateway\.access\.log ",
         f"access_log {directory}/site-access.log "),
        (r"error_log /var/log/nginx/dem-gateway\.error\.log ",
         f"error_log {directory}/site-error.log "),
        (r"include /etc/nginx/snippets/dem-gateway-chronopay-allow\.conf;",
         f"include {directory}/chronopay-allow.conf;"),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, lambda _m, r=replacement: r, text)
        assert count, f"deploy/nginx.conf no longer has {pattern!r}"
    return text


class Nginx:
    """nginx in the foreground with its pid, logs and temp files under one directory."""

    def __init__(self, directory, upstream_socket, allow=()):
        self.directory = str(directory)
        self.https_port, self.http_port = free_port(), free_port()
        self.upstream_socket = upstream_socket
        self.allow = list(allow)
        self.access_log = os.path.join(self.directory, "site-access.log")
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.process = None

    def write_config(self):
        cert, key = self_signed_cert(self.directory)
        self.cert = cert
        with open(SITE, encoding="utf-8") as fh:
            site = loopback_site(fh.read(), self.https_port, self.http_port,
                                 self.upstream_socket, cert, key, self.directory)
        d = self.directory
        with open(os.path.join(d, "chronopay-allow.conf"), "w", encoding="utf-8") as fh:
            fh.write(snippet(self.allow))
        with open(os.path.join(d, "site.conf"), "w", encoding="utf-8") as fh:
            fh.write(site)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read our temp dir
        temps = "".join(f"    {kind}_temp_path {d}/{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = (f"{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
                "events { worker_connections 1024; }\n"
                f"http {{\n    access_log {d}/access.log;\n{temps}    include {d}/site.conf;\n}}\n")
        self.config = os.path.join(d, "nginx.conf")
        with open(self.config, "w", encoding="utf-8") as fh:
            fh.write(main)

    def start(self):
        self.write_config()
        binary = nginx_binary()
        check = subprocess.run([binary, "-t", "-p", self.directory, "-c", self.config, "-e",
                                os.path.join(self.directory, "error.log")],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            [binary, "-p", self.directory, "-c", self.config, "-e",
             os.path.join(self.directory, "error.log"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.error_log()
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def tls(self):
        """A client TLS context that trusts only this nginx's certificate."""
        return ssl.create_default_context(cafile=self.cert)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def error_log(self):
        path = pathlib.Path(self.directory, "error.log")
        return path.read_text(errors="replace") if path.exists() else ""


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as nginx's `server unix:...` upstream speaks it."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
