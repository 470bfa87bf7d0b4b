# common.gp: terminal and styles shared by the simulator's charts.
# The caller sets W and H (pixels) before loading this file; ./sim passes datadir,
# scriptdir and the router names with -e (see simulator/plots.c).
# svg=1 (./sim's report.html) draws SVG instead of PNG; ext is the output's suffix;
# outdir (default datadir) is where the chart goes.
if (!exists("svg")) svg = 0
if (!exists("outdir")) outdir = datadir
ext = svg ? '.svg' : '.png'
if (svg) {
    set terminal svg size W,H dynamic font "sans,10" noenhanced
} else {
    if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
        set terminal pngcairo size W,H font "sans,10" noenhanced
    } else {
        set terminal png size W,H noenhanced
    }
}
set grid lc rgb "#dddddd"
set key top left box opaque
set border lw 1
set style data linespoints
# one colour and marker per router, the baseline first
set linetype 1 lc rgb "#1f77b4" lw 2 pt 7 ps 0.8
set linetype 2 lc rgb "#d62728" lw 2 pt 5 ps 0.8
set linetype 3 lc rgb "#2ca02c" lw 2 pt 9 ps 0.9
set linetype 4 lc rgb "#ff7f0e" lw 2 pt 13 ps 0.9
set linetype 5 lc rgb "#9467bd" lw 2 pt 11 ps 0.9
set linetype 6 lc rgb "#8c564b" lw 2 pt 3 ps 0.9
set linetype 7 lc rgb "#e377c2" lw 2 pt 1 ps 0.9
set linetype 8 lc rgb "#7f7f7f" lw 2 pt 2 ps 0.9
set linetype cycle 8
# stages.dat columns
C_ACH = 3; C_TTFT = 4; C_NTPOT = 5; C_ITL = 6; C_IN = 7; C_OUT = 8; C_TOT = 9
stages = datadir.'/stages.dat'
