module github.com/attnscope/attnscope

go 1.26.8

require google.golang.org/protobuf v1.36.12

require (
	github.com/daulet/tokenizers v1.22.1
	github.com/pkoukk/tiktoken-go-loader v0.0.2
)
