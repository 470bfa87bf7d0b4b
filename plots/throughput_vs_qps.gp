# throughput_vs_qps.gp: inference-perf --analyze's "Throughput vs Request Rate", routers overlaid.
# Per-stage throughput includes each stage's drain, as inference-perf computes it.
W = 1800; H = 520
load scriptdir.'/common.gp'
set output outdir.'/throughput_vs_qps'.ext
set multiplot layout 1,3 title "Throughput vs Request Rate"
set xlabel "QPS (achieved rate)"
set ylabel "Tokens/sec"
set title "Input Tokens/sec vs. QPS"
plot for [i=1:nrouters] stages index (i-1) using C_ACH:C_IN title word(routers, i)
set title "Output Tokens/sec vs. QPS"
plot for [i=1:nrouters] stages index (i-1) using C_ACH:C_OUT title word(routers, i)
set title "Total Tokens/sec vs. QPS"
plot for [i=1:nrouters] stages index (i-1) using C_ACH:C_TOT title word(routers, i)
unset multiplot
