# bench/transfer.gp - transfer time against size, drawn by bench/report.py:
# gnuplot -e "files='a.dat b.dat'; titles='\"title one\" \"title two\"'; out='transfer.png'" transfer.gp
# Each file: bytes, p50 seconds.
set terminal pngcairo size 1000,600 font "sans,10"
set output out
set title "Data transfer in and out: p50 time against size (log-log)" noenhanced
set xlabel "bytes"
set ylabel "p50 time (ms)"
set logscale xy
set xrange [700000:1600000000]
set xtics (1048576, 67108864, 1073741824)
set format x "%.0b %BB"
set grid xtics ytics mytics
set key top left noenhanced box opaque
set label 1 "omnipkgd: shared-memory transfer not implemented yet" at graph 0.02, graph 0.72 noenhanced
plot for [i=1:words(files)] word(files, i) using 1:($2*1000) with linespoints lw 2 pt 7 \
	title word(titles, i)
