/* ssl-floor.c — the memory floor of a TLS server built on OpenSSL 3, for bench/hub/run: a process
 * that only creates a server SSL_CTX with a certificate and key (what ledge-hub and mosquitto do at
 * start) and then waits. Its RSS is what any OpenSSL-based hub pays before its own first byte.
 * Usage: ssl-floor CERT KEY   (runs until SIGTERM) */
#include <openssl/ssl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ssl-floor CERT KEY\n");
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "ssl-floor: cannot load %s / %s\n", argv[1], argv[2]);
        return 1;
    }
    pause();
    SSL_CTX_free(ctx);
    return 0;
}
