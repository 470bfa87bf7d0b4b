# throughput_vs_latency.gp: inference-perf --analyze's "Latency vs Throughput", routers overlaid.
# x = stage mean latency in ms, y = output tokens/sec.
W = 1800; H = 520
load scriptdir.'/common.gp'
set output outdir.'/throughput_vs_latency'.ext
set multiplot layout 1,3 title "Latency vs Throughput"
set ylabel "Output Tokens/sec"
set title "Output Tokens/sec vs. Norm. Time per Output Token"
set xlabel "Mean Norm. Time (ms/token)"
plot for [i=1:nrouters] stages index (i-1) using C_NTPOT:C_OUT title word(routers, i)
set title "Output Tokens/sec vs. Time to First Token"
set xlabel "Mean TTFT (ms)"
plot for [i=1:nrouters] stages index (i-1) using C_TTFT:C_OUT title word(routers, i)
set title "Output Tokens/sec vs. Inter-Token Latency"
set xlabel "Mean ITL (ms)"
plot for [i=1:nrouters] stages index (i-1) using C_ITL:C_OUT title word(routers, i)
unset multiplot
