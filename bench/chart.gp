# SPDX-License-Identifier: Apache-2.0
# The chart of a make bench run: IOPS (top) and mean latency (bottom) per
# job, one bar per target, both on log scales (4 KiB jobs do tens of
# thousands of I/Os per second, 1 MiB jobs hundreds).
#   gnuplot -c bench/chart.gp IOPS.dat LAT.dat NTARGETS NJOBS OUT.png TITLE
# Each .dat file: a header line "job target..." and one line per job
# (bench/run writes them next to results.md).

iops = ARG1
lat = ARG2
n = int(ARG3)
set terminal pngcairo size 1400,1000 font "sans,10"
set output ARG5
set xrange [-0.6:int(ARG4) - 0.4]

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set key outside right top vertical
set xtics rotate by -20 nomirror
set ytics nomirror

set multiplot layout 2,1 title ARG6
set ylabel "IOPS (median of rounds)"
plot for [i=2:n+1] iops using i:xtic(1) title columnheader(i)
set ylabel "mean latency, us (median of rounds)"
plot for [i=2:n+1] lat using i:xtic(1) title columnheader(i)
unset multiplot
