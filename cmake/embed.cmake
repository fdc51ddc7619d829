# Turns a file into a C string array: cmake -DIN=f -DOUT=f.c -DSYM=name -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR size "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE "${OUT}" "/* generated from ${IN}; do not edit */\n#include <stddef.h>\nconst char ${SYM}[] = {${body} 0x00};\nconst size_t ${SYM}_len = ${size};\n")
