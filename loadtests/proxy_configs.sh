# Sourced by run.sh and instructions.sh: the test certificates and the equivalent configuration of every
# proxy. Each function writes to stdout and reads WORK, PORT, PORT_H2C, PORT_TLS, PORT_ADMIN and UP_PORT.
# NGINX_EXTRA: lines put at the top of nginx's configuration (instructions.sh: `master_process off;`).

# ---------------------------------------------------------------------------------------------------------
# Certificates (ECDSA P-256 CA and leaf for bench.test, 127.0.0.1 and ::1), made fresh with openssl.
# ---------------------------------------------------------------------------------------------------------
make_certs() {
  local d="$WORK/certs"
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=loadtest-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench.test \
    -keyout "$d/leaf.key" -out "$d/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:bench.test,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > "$d/ext.cnf"
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile "$d/ext.cnf" -out "$d/leaf.crt" 2>/dev/null
  cat "$d/leaf.crt" "$d/leaf.key" > "$d/leaf-with-key.pem"   # HAProxy wants both in one file
}

# ---------------------------------------------------------------------------------------------------------
# Proxy configurations: the same upstream endpoints of both families, upstream keep-alive, no access logs,
# X-Forwarded-For added, one worker.
# ---------------------------------------------------------------------------------------------------------
ours_config() { # $1 = number of extra host rules, $2 = variant (0/1, for hot swap)
  local extra="${1:-0}" variant="${2:-0}" i
  local eps='["127.0.0.1:'$UP_PORT'", "[::1]:'$UP_PORT'"]'
  [ "$variant" = 1 ] && eps='["[::1]:'$UP_PORT'", "127.0.0.1:'$UP_PORT'"]'
  cat <<EOF
listen: ["127.0.0.1:$PORT", "[::1]:$PORT"]
listenTls: ["127.0.0.1:$PORT_TLS", "[::1]:$PORT_TLS"]
admin: "127.0.0.1:$PORT_ADMIN"
redirectToHttps: false
tls:
  - hosts: ["bench.test", "127.0.0.1", "::1"]
    cert: $WORK/certs/leaf.crt
    key: $WORK/certs/leaf.key
routes:
  - paths:
      - path: /
        backend: bench
EOF
  if [ "$variant" = 1 ]; then
    printf '  - host: swap-%s.bench.test\n    paths:\n      - path: /swapped\n        pathType: Exact\n        backend: bench\n' "$3"
  fi
  for ((i = 0; i < extra; i++)); do
    printf '  - host: host-%d.bench.test\n    paths:\n      - path: /\n        backend: bench\n' "$i"
  done
  cat <<EOF
backends:
  bench:
    endpoints: $eps
EOF
}

nginx_config() {
  mkdir -p "$WORK/nginx/tmp"
  cat <<EOF
${NGINX_EXTRA:-}
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log error;
events { worker_connections 40000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  keepalive_timeout 90s;
  keepalive_requests 100000000;
  upstream bench {
    server 127.0.0.1:$UP_PORT;
    server [::1]:$UP_PORT;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 90s;
  }
  server {
    listen 127.0.0.1:$PORT;
    listen [::1]:$PORT;
    listen 127.0.0.1:$PORT_H2C http2;
    listen [::1]:$PORT_H2C http2;
    listen 127.0.0.1:$PORT_TLS ssl http2;
    listen [::1]:$PORT_TLS ssl http2;
    ssl_certificate $WORK/certs/leaf.crt;
    ssl_certificate_key $WORK/certs/leaf.key;
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF
}

haproxy_config() {
  cat <<EOF
global
  nbthread 1
  # 10,000 idle clients: more connections than half the FD limit, which HAProxy reserves by default
  # (an idle client holds no server connection); "no strict-limits" makes that a warning.
  no strict-limits
  maxconn 12000
defaults
  mode http
  timeout connect 5s
  timeout client 90s
  timeout server 60s
  timeout http-request 30s
  timeout http-keep-alive 90s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$PORT
  bind [::1]:$PORT
  bind 127.0.0.1:$PORT_TLS ssl crt $WORK/certs/leaf-with-key.pem alpn h2,http/1.1
  bind [::1]:$PORT_TLS ssl crt $WORK/certs/leaf-with-key.pem alpn h2,http/1.1
  option forwardfor
  default_backend bench
backend bench
  balance roundrobin
  http-reuse always
  server v4 127.0.0.1:$UP_PORT
  server v6 [::1]:$UP_PORT
EOF
}

envoy_listener() { # name address port tls(0/1)
  cat <<EOF
  - name: $1
    address: { socket_address: { address: "$2", port_value: $3 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          generate_request_id: false
          use_remote_address: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: bench }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
  if [ "$4" = 1 ]; then
    cat <<EOF
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: { filename: "$WORK/certs/leaf.crt" }
              private_key: { filename: "$WORK/certs/leaf.key" }
EOF
  fi
}

envoy_config() {
  echo "static_resources:"
  echo "  listeners:"
  envoy_listener plain4 127.0.0.1 "$PORT" 0
  envoy_listener plain6 ::1 "$PORT" 0
  envoy_listener tls4 127.0.0.1 "$PORT_TLS" 1
  envoy_listener tls6 ::1 "$PORT_TLS" 1
  cat <<EOF
  clusters:
  - name: bench
    type: STATIC
    connect_timeout: 5s
    lb_policy: ROUND_ROBIN
    circuit_breakers:
      thresholds:
      - { max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }
    load_assignment:
      cluster_name: bench
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } } }
        - endpoint: { address: { socket_address: { address: "::1", port_value: $UP_PORT } } }
EOF
}

traefik_config() {
  cat > "$WORK/traefik-dynamic.yml" <<EOF
http:
  routers:
    plain:
      rule: "PathPrefix(\`/\`)"
      entryPoints: [web4, web6]
      service: bench
    secure:
      rule: "PathPrefix(\`/\`)"
      entryPoints: [tls4, tls6]
      service: bench
      tls: {}
  services:
    bench:
      loadBalancer:
        passHostHeader: true
        servers:
          - url: "http://127.0.0.1:$UP_PORT"
          - url: "http://[::1]:$UP_PORT"
tls:
  stores:
    default:
      defaultCertificate:
        certFile: $WORK/certs/leaf.crt
        keyFile: $WORK/certs/leaf.key
EOF
  cat <<EOF
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  web4: { address: "127.0.0.1:$PORT" }
  web6: { address: "[::1]:$PORT" }
  tls4: { address: "127.0.0.1:$PORT_TLS" }
  tls6: { address: "[::1]:$PORT_TLS" }
serversTransport:
  maxIdleConnsPerHost: 256
providers:
  file:
    filename: $WORK/traefik-dynamic.yml
    watch: false
EOF
}

