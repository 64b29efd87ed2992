" fdsl policies
autocmd BufNewFile,BufRead *.fdsl setfiletype fdsl
