# server_timeseries.gp: one router's servers over time: KV cache usage and prefix-cache
# hit rate (hit tokens / prompt tokens admitted over the trailing 5 s; gaps where nothing
# was admitted), one line per server.
W = 1400; H = 800
load scriptdir.'/common.gp'
# One line per server of up to 2,000 points a panel (plots.c buckets the samples):
# gnuplot's libgd png terminal draws them for a third of pngcairo's CPU and an eighth of
# its bytes (docs/VALIDATION.md, "Fourteenth pass"); antialiasing adds nothing to lines
# this dense. Where png is missing, common.gp's choice stands.
if (!svg && strstrt(GPVAL_TERMINALS, " png ") > 0) {
    set terminal png size W,H font "sans,10" noenhanced
}
set output outdir.'/servers_'.router.ext
data = datadir.'/servers_'.router.'.dat'
set multiplot layout 2,1 title router.": per-server state over time"
set key outside right top
set style data lines
set xlabel "time (s)"
set yrange [0:100]
set ylabel "KV cache usage (%)"
set title "KV cache usage"
plot for [s=0:nservers-1] data index s using 1:2 lw 1 title sprintf("server %d", s)
set ylabel "prefix-cache hit rate (%)"
set title "Prefix-cache hit rate"
plot for [s=0:nservers-1] data index s using 1:3 lw 1 title sprintf("server %d", s)
unset multiplot
