/* An independent Segue ZeroMQ client in C (libzmq only), for the interoperability tests.
 *
 * usage: zmq_client ENDPOINT req|dealer|dealer-envelope HEADER [@PCMFILE]... [HEADER [@PCMFILE]...]...
 * Each HEADER (a JSON string) is one request; the @files after it are sent as its raw PCM frames.
 * Requests are sent one at a time; each reply's frames are printed on one line of stdout.
 * "dealer-envelope" sends the empty delimiter frame a REQ socket would, and expects it back.
 * Exit status: 0 ok, 2 usage or I/O error, 3 no reply within 30 s.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ENDPOINT req|dealer|dealer-envelope HEADER [@PCMFILE]...\n", argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    int envelope = strcmp(mode, "dealer-envelope") == 0;
    int type = strcmp(mode, "req") == 0 ? ZMQ_REQ : ZMQ_DEALER;
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, type);
    int timeout_ms = 30000, linger = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "connect %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 2;
    }
    int status = 0;
    for (int i = 3; i < argc && status == 0;) {
        int j = i + 1;
        while (j < argc && argv[j][0] == '@') j++;
        if (envelope) zmq_send(sock, "", 0, ZMQ_SNDMORE);
        zmq_send(sock, argv[i], strlen(argv[i]), j > i + 1 ? ZMQ_SNDMORE : 0);
        for (int k = i + 1; k < j; k++) {
            size_t len = 0;
            char *data = read_file(argv[k] + 1, &len);
            if (!data) { fprintf(stderr, "cannot read %s\n", argv[k] + 1); return 2; }
            zmq_send(sock, data, len, k + 1 < j ? ZMQ_SNDMORE : 0);
            free(data);
        }
        int more = 0, first = 1;
        do {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, sock, 0) < 0) {
                fprintf(stderr, "no reply: %s\n", zmq_strerror(zmq_errno()));
                zmq_msg_close(&msg);
                status = 3;
                break;
            }
            size_t n = zmq_msg_size(&msg);
            if (envelope && first) {
                if (n != 0) { fprintf(stderr, "expected the empty delimiter frame back\n"); status = 2; }
            } else {
                fwrite(zmq_msg_data(&msg), 1, n, stdout);
            }
            first = 0;
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        } while (more);
        putchar('\n');
        fflush(stdout);
        i = j;
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return status;
}
