# Embeds every .py file under a directory into one C table of
# {relative path, bytes, length}, ended by a NULL path (src/runtime.h):
#   cmake -DROOT=dir -DOUT=f.c -P embed.cmake
file(GLOB_RECURSE files RELATIVE "${ROOT}" "${ROOT}/*.py")
list(FILTER files EXCLUDE REGEX "(^|/)__pycache__/")
list(SORT files)
set(arrays "")
set(rows "")
set(i 0)
foreach(f IN LISTS files)
  file(READ "${ROOT}/${f}" hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR size "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
  string(APPEND arrays "static const unsigned char f${i}[] = {${body} 0x00};\n")
  string(APPEND rows "\t{ \"${f}\", f${i}, ${size} },\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}" "/* generated from ${ROOT} by cmake/embed.cmake; do not edit */\n"
     "#include \"runtime.h\"\n\n${arrays}\n"
     "const struct runtime_file runtime_files[] = {\n${rows}\t{ NULL, NULL, 0 },\n};\n")
