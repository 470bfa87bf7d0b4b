# latency_vs_qps.gp: inference-perf --analyze's "Latency vs Request Rate", routers overlaid.
# x = achieved rate (load_summary.achieved_rate), y = stage means in ms.
W = 1800; H = 520
load scriptdir.'/common.gp'
set output outdir.'/latency_vs_qps'.ext
set multiplot layout 1,3 title "Latency vs Request Rate"
set xlabel "QPS (achieved rate)"
set title "Time to First Token vs. QPS"
set ylabel "Mean TTFT (ms)"
plot for [i=1:nrouters] stages index (i-1) using C_ACH:C_TTFT title word(routers, i)
set title "Norm. Time per Output Token vs. QPS"
set ylabel "Mean Norm. Time (ms/token)"
plot for [i=1:nrouters] stages index (i-1) using C_ACH:C_NTPOT title word(routers, i)
set title "Inter-Token Latency vs. QPS"
set ylabel "Mean ITL (ms)"
plot for [i=1:nrouters] stages index (i-1) using C_ACH:C_ITL title word(routers, i)
unset multiplot
