/* records: what more than one writer computes from a sim_run's arrays (records.h): the
 * samples grouped by server, which plots.c writes one series per server from and simdb.c
 * inserts in its samples table's key order. */
#include "records.h"

#include <stdlib.h>

int sim_server_count(const sim_run *run)
{
    int n = 0;
    for (size_t i = 0; i < run->n_samples; i++)
        if (run->samples[i].server + 1 > n)
            n = run->samples[i].server + 1;
    return n;
}

bool sim_samples_by_server(const sim_run *run, int nservers, size_t **order, size_t **first)
{
    *order = malloc((run->n_samples ? run->n_samples : 1) * sizeof **order);
    *first = calloc((size_t)nservers + 1, sizeof **first);
    if (!*order || !*first)
        return false;
    for (size_t i = 0; i < run->n_samples; i++)
        (*first)[run->samples[i].server + 1]++;
    for (int s = 0; s < nservers; s++)
        (*first)[s + 1] += (*first)[s];
    size_t *next = *first;                 /* advanced per placement, restored below */
    for (size_t i = 0; i < run->n_samples; i++)
        (*order)[next[run->samples[i].server]++] = i;
    for (int s = nservers; s > 0; s--)
        next[s] = next[s - 1];
    next[0] = 0;
    return true;
}
