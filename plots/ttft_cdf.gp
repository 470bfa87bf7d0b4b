# ttft_cdf.gp: distribution of time to first token over every request of the run,
# routers overlaid. Log x: the routers can differ by two orders of magnitude.
W = 900; H = 600
load scriptdir.'/common.gp'
set output outdir.'/ttft_cdf'.ext
set title "TTFT, cumulative distribution (all stages)"
set xlabel "TTFT (s)"
set ylabel "Fraction of requests"
set logscale x
set yrange [0:1]
set key bottom right
plot for [i=1:nrouters] datadir.'/ttft_cdf.dat' index (i-1) using 1:2 with lines title word(routers, i)
