# sweep.gp: a sweep's points (./sim with a sweep: section): TTFT p90 and output
# throughput against the measured stage's rate, one line per router, replica count and
# weight. ./sim passes datadir, scriptdir, series (the labels) and nseries with -e.
W = 1400; H = 520
load scriptdir.'/common.gp'
set output outdir.'/sweep'.ext
set multiplot layout 1,2 title "Sweep"
set xlabel "rate (req/s)"
set key top left box opaque
set title "TTFT p90 vs rate"
set ylabel "TTFT p90 (s)"
plot for [i=1:nseries] datadir.'/sweep.dat' index (i-1) using 1:2 title word(series, i)
set title "Output tokens/s vs rate"
set ylabel "tokens/s"
plot for [i=1:nseries] datadir.'/sweep.dat' index (i-1) using 1:3 title word(series, i)
unset multiplot
