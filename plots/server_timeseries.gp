# server_timeseries.gp: one router's servers over time: KV cache usage and prefix-cache
# hit rate (hit tokens / prompt tokens admitted over the trailing 5 s; gaps where nothing
# was admitted), one line per server.
W = 1400; H = 800
load scriptdir.'/common.gp'
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
