# SPDX-License-Identifier: Apache-2.0
# The chart of a make bench-scale run: how the chunk server's costs grow
# with the chunks it holds, from the fill's eighths: resident memory
# (top), CPU per new chunk and new chunks per second (bottom).
#   gnuplot -c bench/scale-chart.gp FILL.dat OUT.png TITLE
# FILL.dat (bench/scale writes it next to results.md): a header line,
# then per eighth: chunks held, chunks/s, CPU us per new chunk, RSS GiB.

set terminal pngcairo size 1000,800 font "sans,10"
set output ARG2
set grid
set key left top
set xlabel "chunks held (one 4 KiB block each; 1 Mi = 1 TiB logical)"
set format x "%.0s%c"
set multiplot layout 2,1 title ARG3
set ylabel "chunk server RSS, GiB"
plot ARG1 using 1:4 with linespoints title "VmRSS after each eighth"
set ylabel "us of CPU per new chunk"
set y2label "new chunks per second"
set y2tics
set ytics nomirror
plot ARG1 using 1:3 with linespoints title "chunk server CPU per new chunk", \
     ARG1 using 1:2 axes x1y2 with linespoints title "new chunks per second"
unset multiplot
