/* pointrun: running sweep and plan points in forked children (see pointrun.h). */
#include "pointrun.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"
#include "scenario.h"
#include "workload.h"

size_t pr_stage(const scenario *s)
{
    size_t n = s->workload.n_stages ? s->workload.n_stages : 1;
    return s->outputs.report_stage < 0 || (size_t)s->outputs.report_stage >= n ? n - 1
                                                                              : (size_t)s->outputs.report_stage;
}

static void apply(scenario *s, const pr_point *p)
{
    if (p->replicas)
        s->cluster.replicas = p->replicas;
    if (p->rate > 0)
        wl_spec_set_rate(&s->workload, pr_stage(s), p->rate);
    if (!p->weight_plugin)
        return;
    epc_config *c = s->routers[p->router].cfg;
    for (size_t i = 0; i < c->n_profiles; i++)
        for (size_t j = 0; j < c->profiles[i].n_refs; j++)
            if (strcmp(c->plugins[c->profiles[i].refs[j].plugin].name, p->weight_plugin) == 0)
                c->profiles[i].refs[j].weight = p->weight;
}

void pr_run_here(scenario *s, const pr_point *p, pr_result *out)
{
    memset(out, 0, sizeof *out);
    apply(s, p);
    kv_err err = {0};
    workload *w = wl_build(&s->workload, s->seed, &err);
    sim_run run = {0};
    cluster_opts co = {0};
    if (!w || (out->rc = cluster_run(s, w, p->router, &co, &run, NULL, &err)) == KV_OK)
        out->rc = w ? lc_compute(&run, (int)pr_stage(s), &out->m, &err) : err.code;
    if (out->rc)
        snprintf(out->msg, sizeof out->msg, "%s", err.msg);
    if (w && run.requests)
        cluster_run_free(&run);
    wl_free(w);
}

/* A child: runs the point on its copy of the scenario and writes the result to fd. */
static void child(const scenario *s, const pr_point *p, int fd)
{
    pr_result r;
    pr_run_here((scenario *)s, p, &r);   /* the child's own copy of the parent's memory */
    const char *b = (const char *)&r;
    size_t left = sizeof r;
    while (left) {
        ssize_t k = write(fd, b, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            _exit(1);
        b += k, left -= (size_t)k;
    }
    _exit(0);
}

/* Reads a child's result until EOF, then reaps it. */
static int gather(pid_t pid, int fd, pr_result *out, kv_err *err)
{
    char *b = (char *)out;
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, b + got, sizeof *out - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
        if (got == sizeof *out)
            break;
    }
    close(fd);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return kv_err_set(err, KV_EIO, "sweep: waiting for a point's process: %s", strerror(errno));
    if (got != sizeof *out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        memset(out, 0, sizeof *out);
        out->rc = KV_EIO;
        snprintf(out->msg, sizeof out->msg, "the point's process died (status %d)", status);
    }
    return KV_OK;
}

int pr_run_all(const scenario *s, const pr_point *points, size_t n, unsigned jobs, pr_result *out, kv_err *err)
{
    if (!jobs) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        jobs = c > 0 ? (unsigned)c : 1;
    }
    pid_t *pid = calloc(n ? n : 1, sizeof *pid);
    int *fd = calloc(n ? n : 1, sizeof *fd);
    if (!pid || !fd) {
        free(pid), free(fd);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    fflush(stdout);
    fflush(stderr);
    int rc = KV_OK;
    size_t started = 0, done = 0;
    /* at most jobs running; the oldest is gathered first, so results arrive in order */
    while (done < n) {
        while (rc == KV_OK && started < n && started - done < jobs) {
            int p[2];
            if (pipe(p) != 0) {
                rc = kv_err_set(err, KV_EIO, "sweep: pipe: %s", strerror(errno));
                break;
            }
            pid_t c = fork();
            if (c < 0) {
                close(p[0]), close(p[1]);
                rc = kv_err_set(err, KV_EIO, "sweep: fork: %s", strerror(errno));
                break;
            }
            if (c == 0) {
                close(p[0]);
                for (size_t i = done; i < started; i++)
                    close(fd[i]);     /* siblings' pipes: their EOF must not wait on this child */
                child(s, &points[started], p[1]);
            }
            close(p[1]);
            pid[started] = c;
            fd[started++] = p[0];
        }
        if (done == started)
            break;
        int grc = gather(pid[done], fd[done], &out[done], err);
        if (grc && rc == KV_OK)
            rc = grc;
        done++;
    }
    free(pid);
    free(fd);
    return rc;
}
