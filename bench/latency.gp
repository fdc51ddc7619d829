# bench/latency.gp - latency distributions of the hot paths, drawn by
# bench/report.py: gnuplot -e "files='a.dat b.dat'; titles='\"title one\" \"title two\"'; out='latency.png'" latency.gp
# Each file: latency (microseconds), share of calls at or below it.
set terminal pngcairo size 1100,620 font "sans,10"
set output out
set title "Hot-path latency: cumulative distribution (one run)" noenhanced
set xlabel "latency per call (µs, log scale)"
set ylabel "share of calls at or below"
set yrange [0:1.02]
set ytics 0.1
set logscale x
set grid xtics ytics mxtics
set key bottom right noenhanced box opaque
set style data linespoints
plot for [i=1:words(files)] word(files, i) using 1:2 with steps lw 2 \
	title word(titles, i)
